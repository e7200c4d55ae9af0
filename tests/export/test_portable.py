"""`--format onnx` and `--format stablehlo` on the shared smoke run: the graphs predict as the
JAX Predictor does (padded batches of several lengths, speakers, long recordings through the
documented windowing, PLDC from pldc.json), and the README's StableHLO example runs with jax
alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile

from papt_jax.export import metadata, onnx_export, portable
from papt_jax.export.graph import PredictorGraph
from papt_jax.pldc import MODES
from papt_jax.predict import assets as assets_lib
from papt_jax.predict.predictor import PLAIN, Predictor
from papt_jax.predict.profiles import SpeakerProfile

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.export", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _export(workdir: Path, out: Path, *args: str) -> Path:
    proc = _cli(f"--workdir={workdir}", f"--out={out}", *args)
    assert proc.returncode == 0, proc.stderr
    return out


def _waves(workdir: Path, split: str) -> dict[str, list[np.ndarray]]:
    """{speaker id: its recordings} of a split, read from the corpus."""
    with np.load(workdir / "evaluate" / "passes" / "arousal.npz") as z:
        keys, speakers = z[f"{split}/key"], z[f"{split}/speaker_id"].astype(str)
    audio = workdir / "corpus" / "Audios"
    return {
        s: [soundfile.read(audio / str(k), dtype="float32")[0] for k in keys[speakers == s]]
        for s in sorted(set(speakers))
    }


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, inputs: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _padded(waves, rows=None) -> dict[str, np.ndarray]:
    audio = np.zeros((len(waves), max(map(len, waves))), np.float32)
    mask = np.zeros(audio.shape, bool)
    for i, w in enumerate(waves):
        audio[i, : len(w)], mask[i, : len(w)] = w, True
    batch = {"audio": audio, "audio_mask": mask}
    if rows is not None:
        batch["speaker"] = np.full(len(waves), rows, np.int32)
    return batch


@pytest.fixture(scope="module")
def predictor(smoke_run) -> Predictor:
    return Predictor.from_run(smoke_run.workdir)  # default windows: what model.json documents


@pytest.fixture(scope="module")
def onnx_folder(smoke_run, tmp_path_factory) -> Path:
    for name in onnx_export.REQUIRED:
        pytest.importorskip(
            name, reason=f"needs {name}, of the optional 'export' packages (README: Export a model)"
        )
    return _export(smoke_run.workdir, tmp_path_factory.mktemp("onnx") / "m", "--format=onnx")


@pytest.fixture(scope="module")
def stablehlo_folder(smoke_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stablehlo") / "m"
    return _export(smoke_run.workdir, out, "--format=stablehlo")


def test_onnx_predicts_as_jax_on_padded_batches_of_several_lengths(
    smoke_run, predictor, onnx_folder
):
    info = json.loads((onnx_folder / "model.json").read_text())
    session = _session(onnx_folder / "predictor.onnx")
    waves = sorted((w for ws in _waves(smoke_run.workdir, "test_c").values() for w in ws), key=len)
    batches = [waves[0::3], waves[1::3][:4], waves[2::3][:2]]  # 3 shapes, mixed lengths
    assert len({max(map(len, b)) for b in batches}) == 3
    speaker = predictor.speakers[2]
    for row, index in ((info["speaker"]["average_row"], None), (2, 2)):
        assert info["speaker"]["rows"][speaker] == 2
        for batch_waves in batches:
            got = _run(session, _padded(batch_waves, row))
            want = predictor.forward(batch_waves, index)
            for dim in predictor.dimensions:
                np.testing.assert_allclose(got[dim], want[dim][PLAIN], rtol=0, atol=TOLERANCE)
                np.testing.assert_allclose(
                    got[f"{dim}_pooled"], want[dim]["pooled"], rtol=0, atol=TOLERANCE
                )
            for i, w in enumerate(batch_waves):  # a padded row is the same row alone
                alone = _run(session, _padded([w], row))
                for dim in predictor.dimensions:
                    assert abs(alone[dim][0] - got[dim][i]) <= 1e-5


def _documented_windows(info: dict, num_samples: int) -> list[tuple[int, int, int]]:
    """(start, length, frames) of each window, following model.json's `windowing.cut` text."""
    frames = (num_samples - 400) // 320 + 1
    most = info["windowing"]["max_frames_per_window"]
    n = -(-frames // most)
    sizes = [frames // n + (1 if i < frames % n else 0) for i in range(n)]
    out, first = [], 0
    for i, f in enumerate(sizes):
        start = 320 * first
        length = num_samples - start if i == n - 1 else 400 + 320 * (f - 1)
        out.append((start, length, f))
        first += f
    return out


def test_a_long_recording_through_the_documented_windowing(smoke_run, predictor, onnx_folder):
    info = json.loads((onnx_folder / "model.json").read_text())
    recordings = _waves(smoke_run.workdir, "test_b")
    long = np.concatenate([w for ws in recordings.values() for w in ws] * 2)
    windows = _documented_windows(info, len(long))
    assert len(windows) >= 2  # longer than the 20 s window
    session, head = _session(onnx_folder / "predictor.onnx"), _session(onnx_folder / "head.onnx")
    row = info["speaker"]["average_row"]
    parts = [long[s : s + n] for s, n, _ in windows]
    out = _run(session, _padded(parts, row))
    assert list(out["frames"]) == [f for *_, f in windows]
    weights = out["frames"].astype(np.float64)[:, None]
    combined = {
        f"{d}_pooled": ((out[f"{d}_pooled"] * weights).sum(0) / weights.sum())[None].astype(
            np.float32
        )
        for d in info["dimensions"]
    }
    whole = _run(head, combined)
    expected = predictor.predict_windows([long])
    assert [(w.start, w.length, w.frames) for w in expected.windows] == windows
    for dim in info["dimensions"]:
        np.testing.assert_allclose(whole[dim], expected.results[dim][PLAIN], atol=TOLERANCE)
        np.testing.assert_allclose(
            out[dim], expected.window_results[dim][PLAIN], rtol=0, atol=TOLERANCE
        )


def test_pldc_json_reproduces_the_predictors_calibration(smoke_run, predictor, onnx_folder):
    """A training speaker's recordings, calibrated by pldc.json's formula from the graph's
    outputs alone, equal `Predictor.predict(..., speaker=ID)`."""
    pldc = json.loads((onnx_folder / "pldc.json").read_text())
    info = json.loads((onnx_folder / "model.json").read_text())
    speaker, waves = next(iter(_waves(smoke_run.workdir, "test_b").items()))
    out = _run(
        _session(onnx_folder / "predictor.onnx"), _padded(waves, info["speaker"]["rows"][speaker])
    )
    expected = predictor.predict(waves, speaker=speaker)
    with np.load(onnx_folder / "pldc_vectors.npz") as z:
        vectors = {k: z[k] for k in z.files}
    for dim in info["dimensions"]:
        train = pldc["training_speakers"][dim]
        mean_vector = out[f"{dim}_pooled"].mean(0)
        unit = vectors[dim] / np.linalg.norm(vectors[dim], axis=1, keepdims=True)
        near = np.argsort(-(unit @ (mean_vector / np.linalg.norm(mean_vector))))[: pldc["k"]]
        mu_bar = np.mean(np.asarray(train["label_mean"])[near])
        sigma_bar = np.mean(np.asarray(train["label_std"])[near])
        y = out[dim].astype(np.float64)
        mu, sigma = y.mean(), y.std()
        got = {
            "mu": y - mu + mu_bar,
            "sigma": (y - mu) * sigma_bar / sigma + mu,
            "both": (y - mu) * sigma_bar / sigma + mu_bar,
        }
        for mode in MODES:
            np.testing.assert_allclose(got[mode], expected[dim][mode], rtol=0, atol=1e-3)


def test_every_export_states_scale_dimensions_rate_config_and_metrics(smoke_run, onnx_folder):
    info = json.loads((onnx_folder / "model.json").read_text())
    assert info["format"] == "papt_jax.onnx"
    assert (info["output_scale"]["min"], info["output_scale"]["max"]) == (1.0, 7.0)
    assert info["dimensions"] == ["arousal", "valence"] and info["sample_rate"] == 16_000
    assert info["source"]["config"] == json.loads((smoke_run.workdir / "config.json").read_text())
    summary = json.loads((smoke_run.workdir / "report" / "summary.json").read_text())
    assert info["source"]["metrics"] == summary
    assert info["check"]["max_abs_difference"]["vs_jax"] <= TOLERANCE
    assert info["windowing"]["window_seconds"] == 20.0
    assets = assets_lib.from_workdir(smoke_run.workdir)
    assert info["limits"]["min_seconds"] == pytest.approx(assets.min_seconds, abs=1e-4)
    assert assets.shortest_train_s is not None and "0.5 x" in info["limits"]["min_seconds_basis"]
    assert info["model_id"] == assets.model_id
    pldc = json.loads((onnx_folder / "pldc.json").read_text())
    assert pldc["k"] == 3 and pldc["modes"] == list(MODES)
    ref = assets.references["valence"]
    np.testing.assert_array_equal(
        np.asarray(pldc["training_speakers"]["valence"]["label_std"], np.float32), ref.label_std
    )
    with np.load(onnx_folder / "pldc_vectors.npz") as z:
        np.testing.assert_array_equal(z["valence"], ref.vectors)
    card = (onnx_folder / "README.md").read_text()
    assert "scale 1..7" in card and "SYNTHETIC corpus" in card


def test_a_profile_folds_its_speaker_row_and_pldc_numbers_in(smoke_run, predictor, tmp_path):
    """What `--profile` writes, without a conversion of its own (the ONNX graph of a folded
    row is tested in test_onnx_graph.py): the profile's proxy row as a constant, the
    predictions the Predictor makes with that profile, and the profile in pldc.json."""
    waves = next(iter(_waves(smoke_run.workdir, "test_c").values()))
    profile = predictor.enroll(waves, name="newcomer")
    path = profile.save(tmp_path / "newcomer.json")
    assets = predictor.assets
    row, folded, loaded = portable.fold(assets, None, path)
    assert row == predictor.speaker_index(profile.speaker_id) and loaded == profile
    graph = PredictorGraph(assets, row)
    assert graph.input_names == ("audio", "audio_mask")
    assert metadata.speaker_section(assets, graph, folded)["folded"] == {
        "row": row,
        "what": profile.describe(),
    }
    out = jax.device_get(jax.jit(graph.predict)(graph.weights, *_padded(waves).values()))
    expected = predictor.predict(waves, profile=profile)
    for dim in predictor.dimensions:
        np.testing.assert_allclose(out[dim], expected[dim][PLAIN], rtol=0, atol=TOLERANCE)
    pldc, _ = metadata.pldc_json(assets, None, loaded)
    assert SpeakerProfile.from_dict(json.loads(json.dumps(pldc))["folded_profile"]) == profile


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- stablehlo-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "the README's StableHLO example (marked <!-- stablehlo-example -->) is missing"
    return match.group(1)


def test_the_readme_stablehlo_example_runs_with_jax_alone(
    smoke_run, predictor, stablehlo_folder, tmp_path
):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 12
    code = code.replace("models/demo_stablehlo", str(stablehlo_folder))
    saved = tmp_path / "out.npz"
    code += (
        "\nimport sys\n"
        "assert not [m for m in sys.modules if m.startswith('papt_jax')], 'papt_jax imported'\n"
        f"np.savez({str(saved)!r}, audio=audio, audio_mask=audio_mask, speaker=speaker, "
        "platforms=np.asarray(predictor.platforms), **out)\n"
    )
    # -I: no PYTHONPATH, no user site; the example imports only jax and numpy.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(saved) as z:
        got = {k: z[k] for k in z.files}
    assert list(got["platforms"]) == ["cpu", "cuda", "tpu"]
    waves = [a[m] for a, m in zip(got["audio"], got["audio_mask"], strict=True)]
    rows = set(got["speaker"].tolist())
    assert len(rows) == 1
    row = rows.pop()
    info = json.loads((stablehlo_folder / "model.json").read_text())
    index = None if row == info["speaker"]["average_row"] else row
    want = predictor.forward(waves, index)
    for dim in predictor.dimensions:
        np.testing.assert_allclose(got[dim], want[dim][PLAIN], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(
            got[f"{dim}_pooled"], want[dim]["pooled"], rtol=0, atol=TOLERANCE
        )
    exported = jax.export.deserialize(bytearray((stablehlo_folder / "head.jax").read_bytes()))
    assert exported.platforms == ("cpu", "cuda", "tpu")
