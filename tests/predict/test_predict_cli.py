"""`python -m papt_jax.predict` as a user runs it, on the shared smoke run."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from smoke_audio import SETTINGS, audio_path, passes, split_keys

from papt_jax.data.audio import resample
from papt_jax.eval.results import load_result
from papt_jax.pldc import MODES
from papt_jax.predict import files

REPO = Path(__file__).resolve().parents[2]
FAST = [
    f"--window_seconds={SETTINGS['window_seconds']}",
    f"--num_buckets={SETTINGS['num_buckets']}",
    f"--batch_seconds={SETTINGS['batch_seconds']}",
]
# The CSV holds 6 significant digits.
CSV_RTOL = 1e-5


def _run(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_vars)
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.predict", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def _copy(workdir: Path, keys, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(audio_path(workdir, str(k)), folder)) for k in keys]


@pytest.mark.slow
def test_broken_files_are_named_and_the_others_predicted(smoke_run, predictor, tmp_path):
    workdir = smoke_run.workdir
    speaker, keys = sorted(split_keys(workdir, "test_b").items())[0]
    folder = tmp_path / "in"
    good = _copy(workdir, keys, folder / "sub")
    wave, _ = soundfile.read(good[0], dtype="float32")
    cd = resample(wave, 16_000, 44_100)
    soundfile.write(folder / "cd.flac", np.stack([cd, 0.5 * cd], axis=1), 44_100)  # stereo
    (folder / "broken.wav").write_bytes(good[0].read_bytes()[:200])
    soundfile.write(folder / "short.wav", wave[:300], 16_000, subtype="PCM_16")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "out" / "pred.csv"

    proc = _run(
        f"--workdir={workdir}", f"--audio={folder}", f"--out={out}", f"--speaker={speaker}", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    assert f"skipped {folder / 'broken.wav'}: truncated" in proc.stderr
    assert f"skipped {folder / 'short.wav'}: too_short" in proc.stderr
    assert "ignored 1 non-audio file(s)" in proc.stderr
    rejected = _read_csv(out.with_name("pred.rejected.csv"))
    assert {r["file"]: r["reason"] for r in rejected} == {
        str(folder / "broken.wav"): "truncated",
        str(folder / "short.wav"): "too_short",
    }
    rows = _read_csv(out)
    expected_files = [folder / "cd.flac", *good]
    assert [r["file"] for r in rows] == [str(p) for p in expected_files]
    assert {r["speaker"] for r in rows} == {f"training speaker {speaker}"}
    assert list(rows[0]) == [
        "file", "duration_s", "speaker", "arousal", "valence",
        *[f"{d}_{m}" for d in ("arousal", "valence") for m in MODES], "outside_scale",
    ]  # fmt: skip
    assert {r["outside_scale"] for r in rows} == {""}
    # The same numbers as the Python API on the same files (the CLI uses it).
    waves = [files.read_for_model(p) for p in expected_files]
    api = predictor.predict(waves, speaker=speaker)
    for dim in api:
        got = np.asarray([float(r[dim]) for r in rows])
        np.testing.assert_allclose(got, api[dim]["prediction"], rtol=CSV_RTOL)
        for mode in MODES:
            got = np.asarray([float(r[f"{dim}_{mode}"]) for r in rows])
            np.testing.assert_allclose(got, api[dim][mode], rtol=CSV_RTOL)
    durations = [float(r["duration_s"]) for r in rows]
    np.testing.assert_allclose(durations, [len(w) / 16_000 for w in waves], atol=1e-3)


@pytest.mark.slow
def test_enroll_save_profile_and_reuse_it(smoke_run, tmp_path):
    workdir = smoke_run.workdir
    speaker, keys = sorted(split_keys(workdir, "test_c").items())[0]
    folder = tmp_path / "alice"
    _copy(workdir, keys, folder)
    out, profile = tmp_path / "alice.csv", tmp_path / "alice.json"
    proc = _run(
        f"--workdir={workdir}", f"--enroll={folder}", f"--save_profile={profile}",
        f"--audio={folder}", f"--out={out}", *FAST, PAPT_JAX_PROGRESS_SECONDS="0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # Progress names the audio enrolled once and the model passes over it (a new speaker:
    # the original encoder, then one regressor per dimension), as plain lines in a pipe.
    seconds = re.search(r"enrolled alice: \d+ recordings, ([0-9.]+) s;", proc.stderr).group(1)
    assert f"enrolling {seconds} s of audio (3 model passes): 100 %, " in proc.stderr
    assert f"predicting {seconds} s of audio (2 model passes): 100 %, " in proc.stderr
    assert "\r" not in proc.stderr
    fine = passes(workdir)
    proxy_index = fine["test_c/speaker"][fine["test_c/speaker_id"].astype(str) == speaker][0]
    stored = json.loads(profile.read_text())
    proxy = json.loads((workdir / "data/papt_msp_podcast/1.0.0/speakers.json").read_text())
    assert stored["speaker_id"] == proxy["speakers"][int(proxy_index)]
    assert stored["kind"] == "enrolled" and stored["name"] == "alice"
    assert f"enrolled alice: {len(keys)} recordings" in proc.stderr
    rows = _read_csv(out)
    assert rows[0]["speaker"] == f"profile alice (proxy: training speaker {stored['speaker_id']})"
    for dim in ("arousal", "valence"):
        result = load_result(workdir / "evaluate" / f"test-c_{dim}.npz")
        index = {k: i for i, k in enumerate(result.keys)}
        order = [index[Path(r["file"]).name] for r in rows]
        for mode in MODES:
            got = np.asarray([float(r[f"{dim}_{mode}"]) for r in rows])
            expected = result.calibrated[mode][order]
            np.testing.assert_allclose(got, expected, rtol=CSV_RTOL, atol=2e-5)

    # Later: the saved profile alone, no enrollment audio.
    single = tmp_path / "later.csv"
    first = Path(rows[0]["file"])
    proc = _run(
        f"--workdir={workdir}", f"--profile={profile}", f"--audio={first}", f"--out={single}",
        *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = _read_csv(single)
    assert row.keys() == rows[0].keys()
    assert [row[k] for k in ("file", "speaker")] == [rows[0][k] for k in ("file", "speaker")]
    numbers = [k for k in row if k not in ("file", "speaker", "outside_scale")]
    np.testing.assert_allclose(
        [float(row[k]) for k in numbers], [float(rows[0][k]) for k in numbers], rtol=CSV_RTOL
    )


@pytest.mark.slow
def test_short_clips_are_refused_and_leave_the_speakers_calibration_alone(smoke_run, tmp_path):
    workdir = smoke_run.workdir
    speaker, keys = sorted(split_keys(workdir, "test_b").items())[0]
    good = _copy(workdir, keys, tmp_path / "good")
    wave, _ = soundfile.read(good[0], dtype="int16")
    short = tmp_path / "short"
    short.mkdir()
    for name, seconds in (("25ms", 0.025), ("100ms", 0.1), ("300ms", 0.3)):
        clip = wave[len(wave) // 2 :][: round(seconds * 16_000)]  # speech, not the lead-in
        soundfile.write(short / f"{name}.wav", clip, 16_000, subtype="PCM_16")
    alone, mixed = tmp_path / "alone.csv", tmp_path / "mixed.csv"
    common = (f"--workdir={workdir}", f"--speaker={speaker}", *FAST)
    proc = _run(*common, f"--audio={tmp_path / 'good'}", f"--out={alone}")
    assert proc.returncode == 0, proc.stderr
    assert not alone.with_name("alone.rejected.csv").exists()  # nothing refused: no file
    proc = _run(*common, f"--audio={tmp_path / 'good'},{short}", f"--out={mixed}")
    assert proc.returncode == 0, proc.stderr

    index = json.loads((workdir / "data/papt_msp_podcast/1.0.0/index/train.json").read_text())
    shortest = min(index["num_samples"]) / 16_000
    rejected = _read_csv(mixed.with_name("mixed.rejected.csv"))
    assert [(r["file"], r["reason"]) for r in rejected] == [
        (str(short / f"{name}.wav"), "too_short") for name in ("100ms", "25ms", "300ms")
    ]
    for r, seconds in zip(rejected, (0.1, 0.025, 0.3), strict=True):
        assert r["detail"] == (
            f"{seconds:.3f} s; this model takes recordings of at least {0.5 * shortest:.2f} s "
            f"(0.5 x the shortest training utterance, {shortest:.2f} s)"
        )
        assert f"skipped {r['file']}: too_short ({r['detail']})" in proc.stderr
    # The refused clips changed nothing: the same rows, the same calibrated numbers.
    assert _read_csv(mixed) == _read_csv(alone)


@pytest.mark.slow
def test_no_usable_file_is_one_error_line(smoke_run, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    proc = _run(
        f"--workdir={smoke_run.workdir}", f"--audio={tmp_path / 'a.wav'}",
        f"--out={tmp_path / 'o.csv'}",
    )  # fmt: skip
    line = _one_error_line(proc)
    assert line.startswith("error: no file could be predicted: all 1 were refused")
    assert f"skipped {tmp_path / 'a.wav'}: corrupt" in proc.stderr
    assert (tmp_path / "o.rejected.csv").is_file() and not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_too_little_enrollment_speech_is_refused(smoke_run, tmp_path):
    keys = sorted(split_keys(smoke_run.workdir, "test_c").items())[0][1]
    _copy(smoke_run.workdir, keys[:1], tmp_path / "bob")
    proc = _run(
        f"--workdir={smoke_run.workdir}", f"--enroll={tmp_path / 'bob'}",
        f"--save_profile={tmp_path / 'p.json'}",
    )  # fmt: skip
    line = _one_error_line(proc)
    assert "needs at least 2 recordings and 10 s in total" in line
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workdir=a", "--export=b", "--audio=x", "--out=y"], "exactly one of --workdir"),
        (["--export=b"], "nothing to do"),
        (["--workdir=a", "--audio=x"], "--audio needs --out"),
        (["--workdir=a", "--profile=p", "--speaker=1", "--audio=x", "--out=y"], "--profile cannot"),
        (["--workdir=a", "--speaker=1", "--save_profile=p"], "nothing to do"),
        (["--workdir=a", "--audio=/no/such/a.wav", "--out=y"], "/no/such/a.wav does not exist"),
        (["--workdir=/no/such/run", "--audio=WAV", "--out=y"], "not a papt_jax run folder"),
        (["--export=/no/such/model", "--audio=WAV", "--out=y"], "not an exported papt_jax model"),
        (["--workdir=a", "--bogus=1"], "bogus"),
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path):
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, 0.1 * np.sin(np.arange(8000) / 5.0), 16_000)
    args = [a.replace("WAV", str(wav)).replace("=y", f"={tmp_path / 'y.csv'}") for a in args]
    line = _one_error_line(_run(*args))
    assert message in line
