"""`python -m papt_jax.export`: one folder that predicts bit for bit as its workdir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from papt_jax.predict import assets as assets_lib
from papt_jax.predict.predictor import Predictor

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"window_seconds": 4.0, "num_buckets": 1, "batch_seconds": 32.0}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.export", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _test_c_waves(workdir: Path) -> list[np.ndarray]:
    """One unseen (test-c) speaker's recordings, read from the corpus."""
    with np.load(workdir / "evaluate" / "passes" / "original_encoder.npz") as z:
        keys, speakers = z["test_c/key"], z["test_c/speaker_id"].astype(str)
    chosen = keys[speakers == sorted(set(speakers))[0]]
    audio = workdir / "corpus" / "Audios"
    return [soundfile.read(audio / str(k), dtype="float32")[0] for k in chosen]


@pytest.fixture(scope="module")
def exported(smoke_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model"
    proc = _cli(f"--workdir={smoke_run.workdir}", f"--out={out}", "--to_hf")
    assert proc.returncode == 0, proc.stderr
    assert f"to {out}" in proc.stderr
    return out


def test_export_predicts_bit_for_bit_as_the_workdir(smoke_run, exported):
    waves = _test_c_waves(smoke_run.workdir)
    run = Predictor.from_run(smoke_run.workdir, **SETTINGS)
    model = Predictor.from_export(exported, **SETTINGS)
    assert model.model_id == run.model_id
    assert model.speakers == run.speakers and model.pldc_k == run.pldc_k

    enrolled = run.enroll(waves, name="x")
    assert model.enroll(waves, name="x") == enrolled  # same proxy, neighbours and numbers
    training = model.speakers[int(model.assets.references["arousal"].speaker_index[0])]
    for options in ({}, {"speaker": training}, {"profile": enrolled}):
        a, b = run.predict(waves, **options), model.predict(waves, **options)
        assert a.keys() == b.keys()
        for dim in a:
            assert a[dim].keys() == b[dim].keys()
            for variant in a[dim]:
                np.testing.assert_array_equal(a[dim][variant], b[dim][variant])


def test_export_folder_is_self_contained_and_documented(smoke_run, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["format"] == "papt_jax.export" and manifest["dimensions"] == [
        "arousal",
        "valence",
    ]
    assert manifest["pldc_k"] == 3 and manifest["num_training_speakers"] == 10
    # The minimum duration travels with the model; an export without it takes the default.
    index = json.loads(
        (smoke_run.workdir / "data/papt_msp_podcast/1.0.0/index/train.json").read_text()
    )
    assert manifest["shortest_train_s"] == round(min(index["num_samples"]) / 16_000, 4)
    model = assets_lib.from_export(exported)
    assert model.min_seconds == assets_lib.from_workdir(smoke_run.workdir).min_seconds
    assert model.min_seconds == 0.5 * manifest["shortest_train_s"]
    for name in ("config.json", "speakers.json", "summary.json", "reference.npz", "README.md"):
        assert (exported / name).is_file(), name
    for dim in manifest["dimensions"]:
        assert (exported / "regressors" / dim / "encoder_config.json").is_file()
        assert (exported / "regressors" / dim / "variables").is_dir()
    assert (exported / "original_encoder" / "config.json").is_file()
    with np.load(exported / "reference.npz") as z:
        assert z["arousal/vectors"].shape == (10, 32)
        assert z["original/vectors"].shape == (10, 32)
        assert np.isfinite(z["valence/label_std"]).all()

    card = (exported / "README.md").read_text()
    summary = json.loads((smoke_run.workdir / "report" / "summary.json").read_text())
    o_ccc = summary["splits"]["test-b"]["arousal"]["system"]["o_ccc"]
    assert f"| plain | {o_ccc:.3f} / " in card
    assert "SYNTHETIC corpus (preset `smoke`" in card
    assert "10 training speakers" in card
    assert "python -m papt_jax.predict --export=THIS_FOLDER" in card
    # Nothing points back into the workdir: it can be moved or deleted.
    moved = exported.with_name("moved")
    exported.rename(moved)
    try:
        assert assets_lib.from_export(moved).model_id == manifest["model_id"]
    finally:
        moved.rename(exported)


def test_to_hf_writes_the_encoders_for_transformers(smoke_run, exported):
    from papt_jax.convert import load_pytorch

    for dim in ("arousal", "valence"):
        folder = exported / "hf" / dim
        assert (folder / "model.safetensors").is_file()
        assert (folder / "speaker_embedding.safetensors").is_file()
    _, back = load_pytorch(str(exported / "hf" / "arousal"))
    variables = assets_lib.from_export(exported).regressors["arousal"].variables
    table = variables["params"]["hubert"]["speaker_embedding"]["embedding"]
    np.testing.assert_array_equal(back["speaker_embedding"]["embedding"], table)
    assert (exported / "hf" / "adapted" / "config.json").is_file()


def test_export_refuses_to_overwrite_and_needs_a_finished_run(smoke_run, exported, tmp_path):
    proc = _cli(f"--workdir={smoke_run.workdir}", f"--out={exported}")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {exported} is not empty")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    proc = _cli(f"--workdir={smoke_run.workdir}", f"--out={other}", "--overwrite")
    assert proc.returncode == 2 and "is not an earlier export" in proc.stderr
    assert (other / "keep.txt").read_text() == "mine"
    proc = _cli(f"--workdir={tmp_path}", f"--out={tmp_path / 'x'}")
    assert proc.returncode == 2 and "not a papt_jax run folder" in proc.stderr
    assert not (tmp_path / "x").exists()
