"""Tests of the embedded synthetic corpus generator (papt_jax.data.synthetic)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from absl import flags

from papt_jax import metrics
from papt_jax.data import msp_podcast, synthetic
from papt_jax.data.synthetic import __main__ as synthetic_cli
from papt_jax.data.synthetic import speakers as speakers_lib
from papt_jax.data.synthetic import voice
from papt_jax.errors import UserError

SPLITS = {"Train", "Development", "Test1", "Test2"}


def _read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _digest(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    return synthetic.generate_corpus(tmp_path_factory.mktemp("smoke") / "c", "smoke", seed=0)


@pytest.fixture(scope="module")
def old_rows(corpus):
    return _read_csv(corpus / "Labels" / "labels_consensus.csv")


@pytest.fixture(scope="module")
def new_rows(corpus):
    return _read_csv(corpus / "Labels_new" / "labels_consensus.csv")


@pytest.fixture(scope="module")
def truth(corpus):
    return json.loads((corpus / "ground_truth.json").read_text())


# --------------------------------------------------------------------------- determinism


def _cli_flags(*args: str) -> flags.FlagValues:
    """The CLI's flags parsed from `args`, in their own FlagValues (not the global one)."""
    fv = flags.FlagValues()
    synthetic_cli.define_flags(fv)
    fv(["synthetic", *args])
    return fv


@pytest.mark.slow
def test_same_seed_is_byte_identical_and_cli_matches_library(corpus, tmp_path, capsys):
    out = tmp_path / "again"
    flag_values = _cli_flags("--preset", "smoke", "--out", str(out), "--seed=0")
    synthetic_cli.generate_from_flags(flag_values)
    assert "wrote" in capsys.readouterr().out
    assert _digest(out) == _digest(corpus)


@pytest.mark.slow
def test_different_seed_differs(corpus, tmp_path):
    other = synthetic.generate_corpus(tmp_path / "seed1", "smoke", seed=1)
    a, b = _digest(corpus), _digest(other)
    assert a["Labels/labels_consensus.csv"] != b["Labels/labels_consensus.csv"]
    shared = set(a) & set(b)
    wavs = [k for k in shared if k.endswith(".wav")]
    assert wavs and all(a[k] != b[k] for k in wavs)


# --------------------------------------------------------------------------- layout


def test_layout_and_csv_schema(corpus, old_rows, new_rows):
    for name in ("Audios", "Labels", "Labels_new"):
        assert (corpus / name).is_dir()
    readme = (corpus / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "papt_jax.data.synthetic" in readme
    for path in ("Labels/labels_consensus.csv", "Labels_new/labels_consensus.csv"):
        header = (corpus / path).read_text().splitlines()[0]
        assert header == "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
    for row in new_rows:
        assert re.fullmatch(r"SYN_\d{4}_\d{4}\.wav", row["FileName"])
        assert row["EmoClass"] in {"N", "H", "A", "S"}
        for col in ("EmoAct", "EmoVal", "EmoDom"):
            assert 1.0 <= float(row[col]) <= 7.0
        assert row["SpkrID"] == "Unknown" or row["SpkrID"].isdigit()
        assert row["Gender"] in {"Male", "Female"}
        assert row["Split_Set"] in SPLITS
    assert {r["Split_Set"] for r in old_rows} == SPLITS
    names = [r["FileName"] for r in new_rows]
    assert len(names) == len(set(names))


def _speakers_by_split(rows) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in rows:
        if r["SpkrID"] != "Unknown":
            out.setdefault(r["Split_Set"], set()).add(r["SpkrID"])
    return out


def test_splits_are_disjoint_by_speaker(old_rows, new_rows):
    preset = synthetic.CORPUS_PRESETS["smoke"]
    for rows in (old_rows, new_rows):
        by_split = _speakers_by_split(rows)
        splits = sorted(by_split)
        for i, a in enumerate(splits):
            for b in splits[i + 1 :]:
                assert not by_split[a] & by_split[b], (a, b)
    old = _speakers_by_split(old_rows)
    assert len(old["Train"]) == preset.num_train_speakers
    assert len(old["Development"]) == preset.num_dev_speakers
    assert len(old["Test1"]) == preset.num_test_speakers
    assert len(old["Test2"]) == preset.num_test2_speakers


def test_new_release_is_superset_with_new_test1_speakers(corpus):
    old_lines = (corpus / "Labels/labels_consensus.csv").read_text().splitlines()
    new_lines = (corpus / "Labels_new/labels_consensus.csv").read_text().splitlines()
    assert set(old_lines) <= set(new_lines)
    added = [
        dict(zip(msp_podcast.CSV_COLUMNS, line.split(","), strict=True))
        for line in set(new_lines) - set(old_lines)
    ]
    assert added and all(r["Split_Set"] == "Test1" for r in added)
    old_speakers = {line.split(",")[5] for line in old_lines[1:]}
    new_speakers = {r["SpkrID"] for r in added}
    assert not new_speakers & old_speakers
    assert len(new_speakers) == synthetic.CORPUS_PRESETS["smoke"].num_new_speakers


def test_unknown_rows_present(old_rows, new_rows):
    unknown = [r for r in old_rows if r["SpkrID"] == "Unknown"]
    assert len(unknown) == synthetic.CORPUS_PRESETS["smoke"].num_unknown_rows
    assert len([r for r in new_rows if r["SpkrID"] == "Unknown"]) == len(unknown)


# --------------------------------------------------------------------------- audio


def test_wavs_are_16k_mono_int16_with_recorded_durations(corpus, new_rows, truth):
    preset = synthetic.CORPUS_PRESETS["smoke"]
    wavs = {p.name for p in (corpus / "Audios").iterdir()}
    assert wavs == {r["FileName"] for r in new_rows}
    for row in new_rows:
        info = sf.info(corpus / "Audios" / row["FileName"])
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        record = truth["utterances"][row["FileName"]]
        assert info.frames == record["num_samples"]
        assert info.frames == round(record["duration_s"] * 16_000)
        assert preset.min_duration_s <= record["duration_s"] <= preset.max_duration_s
    audio, rate = sf.read(corpus / "Audios" / new_rows[0]["FileName"], dtype="int16")
    assert audio.dtype == np.int16 and audio.ndim == 1 and rate == 16_000
    assert np.abs(audio).max() > 1000  # audible, not silence


# --------------------------------------------------------------------------- ground truth


def test_ground_truth_matches_csv(truth, new_rows):
    preset = json.loads(json.dumps(dataclasses.asdict(synthetic.CORPUS_PRESETS["smoke"])))
    assert truth["preset"] == preset
    assert truth["seed"] == 0 and truth["sample_rate"] == 16_000
    assert set(truth["utterances"]) == {r["FileName"] for r in new_rows}
    for row in new_rows:
        record = truth["utterances"][row["FileName"]]
        assert record["speaker"] == row["SpkrID"] and record["split"] == row["Split_Set"]
        assert record["arousal"] == pytest.approx(float(row["EmoAct"]), abs=1e-4)
        assert record["valence"] == pytest.approx(float(row["EmoVal"]), abs=1e-4)
        if row["SpkrID"] != "Unknown":
            speaker = truth["speakers"][row["SpkrID"]]
            assert speaker["gender"] == row["Gender"] and speaker["split"] == row["Split_Set"]
    named = {r["SpkrID"] for r in new_rows} - {"Unknown"}
    assert set(truth["speakers"]) == named
    new_only = {s for s, v in truth["speakers"].items() if v["new_release_only"]}
    assert all(
        truth["utterances"][r["FileName"]]["release"] == "new"
        for r in new_rows
        if r["SpkrID"] in new_only
    )
    for params in truth["speakers"].values():
        assert 1.0 <= params["labels"]["arousal_mean"] <= 7.0
        assert params["labels"]["arousal_std"] > 0 and params["labels"]["valence_std"] > 0


def test_test_a_seconds_leaves_a_test_b_remainder(truth, new_rows):
    seconds = truth["test_a_seconds"]
    assert seconds > 0
    per_speaker: dict[str, list[float]] = {}
    for row in sorted(new_rows, key=lambda r: r["FileName"]):
        if row["Split_Set"] == "Test1":
            per_speaker.setdefault(row["SpkrID"], []).append(
                truth["utterances"][row["FileName"]]["duration_s"]
            )
    for durations in per_speaker.values():
        # The reader takes utterances in file-name order until the threshold is reached.
        taken = int(np.searchsorted(np.cumsum(durations), seconds)) + 1
        assert taken < len(durations)


def test_label_distributions_follow_traits():
    preset = dataclasses.replace(synthetic.CORPUS_PRESETS["demo"], name="traits")
    speakers = [s for s in speakers_lib.make_speakers(preset, seed=0) if s.role != "hidden"]
    expressiveness = [s.traits["expressiveness"] for s in speakers]
    arousal_mean = [s.label_params["arousal_mean"] for s in speakers]
    arousal_std = [s.label_params["arousal_std"] for s in speakers]
    assert np.corrcoef(expressiveness, arousal_mean)[0, 1] > 0.6
    assert np.corrcoef(expressiveness, arousal_std)[0, 1] > 0.99


def test_arousal_raises_level_and_pitch():
    traits = speakers_lib.make_speakers(synthetic.CORPUS_PRESETS["smoke"], seed=0)[0].traits
    calm, aroused = (
        voice.synthesize_utterance(np.random.default_rng(7), traits, a, 4.0, 2.0)
        for a in (2.0, 6.0)
    )
    assert calm.shape == aroused.shape == (32_000,)
    assert np.sqrt(np.mean(aroused**2)) > 1.5 * np.sqrt(np.mean(calm**2))
    assert np.median(_pitch_track(aroused)) > np.median(_pitch_track(calm))


# --------------------------------------------------------------------------- errors


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.generate_corpus(out, "smoke")
    with pytest.raises(UserError, match="overwrite"):
        synthetic_cli.generate_from_flags(_cli_flags("--out", str(out)))
    tiny = dataclasses.replace(
        synthetic.CORPUS_PRESETS["smoke"],
        name="tiny",
        num_train_speakers=1,
        num_dev_speakers=1,
        num_test_speakers=1,
        num_test2_speakers=0,
        num_new_speakers=1,
        num_unknown_rows=0,
    )
    synthetic.generate_corpus(out, tiny, overwrite=True)
    assert (out / "ground_truth.json").is_file() and (out / "something").is_file()


@pytest.mark.slow
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("x")
    for args, expected in (
        (["--out", str(out)], "is not empty"),
        (["--out", str(out), "--preset", "huge"], "preset"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "papt_jax.data.synthetic", *args],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and expected in proc.stderr.splitlines()[0]
        assert "Traceback" not in proc.stderr


def test_bad_presets_raise():
    with pytest.raises(ValueError, match="unknown preset"):
        synthetic.generate_corpus("/nonexistent/never", "huge")
    with pytest.raises(ValueError, match="num_new_speakers"):
        dataclasses.replace(synthetic.CORPUS_PRESETS["smoke"], num_new_speakers=0)
    with pytest.raises(ValueError, match="min_duration_s"):
        smoke = synthetic.CORPUS_PRESETS["smoke"]
        dataclasses.replace(smoke, min_duration_s=4.0, max_duration_s=2.0)


# --------------------------------------------------------------------------- learnability

_FRAME, _HOP = 640, 160  # 40 ms frames every 10 ms


def _frames(wave: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(wave, _FRAME)[::_HOP]


def _pitch_track(wave: np.ndarray, min_strength: float = 0.5) -> np.ndarray:
    """f0 (Hz) of the voiced, active frames by picking the autocorrelation peak (70-400 Hz)."""
    frames = _frames(np.asarray(wave, dtype=np.float64))
    frames = frames - frames.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(frames, n=2 * _FRAME)) ** 2
    autocorr = np.fft.irfft(power)[:, :_FRAME]
    lo, hi = 16_000 // 400, 16_000 // 70
    lag = lo + np.argmax(autocorr[:, lo:hi], axis=1)
    strength = autocorr[np.arange(len(frames)), lag] / np.maximum(autocorr[:, 0], 1e-12)
    log_energy = np.log(np.mean(frames**2, axis=1) + 1e-10)
    keep = (strength > min_strength) & (log_energy > log_energy.max() - 5.0)
    return 16_000 / lag[keep]


def _features(wave_int16: np.ndarray) -> np.ndarray:
    """Per-utterance acoustic summary, shape (8,)."""
    wave = wave_int16.astype(np.float64) / 32768.0
    frames = _frames(wave)
    log_energy = np.log(np.mean(frames**2, axis=1) + 1e-10)
    active = log_energy > log_energy.max() - 5.0
    f0 = _pitch_track(wave)
    log_f0 = np.log(f0) if f0.size > 2 else np.full(2, np.log(150.0))
    zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(_FRAME), axis=1))
    freqs = np.fft.rfftfreq(_FRAME, 1 / 16_000)
    centroid = (magnitude * freqs).sum(axis=1) / (magnitude.sum(axis=1) + 1e-12)
    return np.array(
        [
            log_energy[active].mean(),
            log_energy[active].std(),
            log_f0.mean(),
            log_f0.std(),
            zcr[active].mean(),
            centroid[active].mean(),
            active.mean(),
            f0.size / len(frames),
        ]
    )


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def test_arousal_is_learnable_from_acoustics_and_valence_is_harder(corpus, old_rows):
    rows = [
        r for r in old_rows if r["Split_Set"] in ("Train", "Test1") and r["SpkrID"] != "Unknown"
    ]
    feats = np.stack(
        [_features(sf.read(corpus / "Audios" / r["FileName"], dtype="int16")[0]) for r in rows]
    )
    train = np.array([r["Split_Set"] == "Train" for r in rows])
    mean, std = feats[train].mean(0), feats[train].std(0)
    design = np.c_[(feats - mean) / std, np.ones(len(rows))]
    result = {}
    for name, column in (("arousal", "EmoAct"), ("valence", "EmoVal")):
        y = np.array([float(r[column]) for r in rows])
        weights = _ridge(design[train], y[train])
        result[name] = metrics.ccc(design[~train] @ weights, y[~train])
    # Measured on smoke seed 0 (Test1 speakers never seen in training): arousal ~0.56.
    assert result["arousal"] > 0.4, result
    assert result["valence"] < result["arousal"], result


def test_frame_wise_formant_filter_matches_recursive_filter_for_constant_formants():
    source = np.random.default_rng(0).normal(size=20_000)
    formants = np.array([500.0, 1500.0, 2500.0, 3500.0])
    tracks = np.tile(formants, (voice._num_frames(source.size), 1))
    frame_wise = voice._formant_filter(source, tracks)
    sos = voice._resonator_sos(formants, voice._FORMANT_BANDWIDTHS)
    recursive = scipy.signal.sosfilt(sos, source)
    assert np.abs(frame_wise - recursive).max() < 1e-3 * np.abs(recursive).max()
