"""The two published emotion models predict from converted files, and PLDC applies to them.

Their files are built by `fixtures.emotion_files` (random weights, the published names and
layouts) at tiny widths; the PyTorch classes there compute what the published code does.
"""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from fixtures.emotion_files import (
    audeering_model,
    msp_model,
    write_audeering,
    write_msp_package,
    write_msp_release,
)
from fixtures.family_files import tiny_config
from smoke_audio import SETTINGS, read_waves, split_keys

from papt_jax.convert import load_pytorch_checkpoint, save_converted
from papt_jax.predict import emotion_reference
from papt_jax.predict.emotion import EmotionPredictor

MEAN, STD = 0.003, 0.08
BACKBONE = tiny_config("wavlm", "stable", conv_bias=False).to_dict()
WAVES = [
    np.random.default_rng(i).normal(0, 0.1, n).astype(np.float32)
    for i, n in enumerate((16000, 23456, 17300))
]


def _converted(tmp_path, source, **kwargs):
    return save_converted(load_pytorch_checkpoint(source, **kwargs), tmp_path / "flax")


def _torch(model, wave, kind):
    with torch.no_grad():
        if kind == "audeering":  # its processor: zero mean, unit variance per utterance
            x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
            return model(torch.from_numpy(x[None]))[1].numpy()[0]
        x = ((wave.astype(np.float64) - MEAN) / (STD + 1e-6)).astype(np.float32)
        return model(torch.from_numpy(x[None]), torch.ones(1, len(x))).numpy()[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("emotion")
    aud, msp = audeering_model(), msp_model()
    folders = {
        "audeering": _converted(root / "a", write_audeering(root / "aud", aud)),
        "msp_release": _converted(
            root / "r", write_msp_release(root / "rel", msp, MEAN, STD), backbone_config=BACKBONE
        ),
        "msp_package": _converted(
            root / "p", write_msp_package(root / "pkg", msp, MEAN, STD), backbone_config=BACKBONE
        ),
    }
    return {"audeering": aud, "msp": msp}, folders


@pytest.mark.slow
@pytest.mark.parametrize("name", ["audeering", "msp_release", "msp_package"])
def test_predictions_equal_the_published_models(models, name):
    torch_models, folders = models
    kind = name.split("_")[0]
    predictor = EmotionPredictor.from_converted(folders[name], **SETTINGS)
    assert predictor.dimensions == ("arousal", "dominance", "valence")
    assert predictor.label_range == (0.0, 1.0)
    out = predictor.predict(WAVES)
    for i, wave in enumerate(WAVES):
        ref = _torch(torch_models[kind], wave, kind)
        got = np.array([out[d]["prediction"][i] for d in predictor.dimensions])
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_recordings_under_the_minimum_duration_are_refused(models):
    from papt_jax.data.audio import TooShortAudio

    predictor = EmotionPredictor.from_converted(models[1]["audeering"], **SETTINGS)
    with pytest.raises(TooShortAudio, match="waveform 1: 0.456 s; this model takes"):
        predictor.predict([WAVES[0], WAVES[0][:7300]])


def _cli(*args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "papt_jax.predict",
            *args,
            "--window_seconds=4",
            "--num_buckets=1",
            "--batch_seconds=32",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.mark.slow
def test_cli_predicts_every_dimension_and_shows_the_scale(models, tmp_path):
    _, folders = models
    import soundfile

    for i, wave in enumerate(WAVES):
        soundfile.write(tmp_path / f"{i}.wav", wave, 16000, subtype="FLOAT")
    # Under the 1 s minimum of a model that recorded no training durations: refused, listed.
    soundfile.write(tmp_path / "short.wav", WAVES[0][:7300], 16000, subtype="FLOAT")
    result = _cli(
        f"--converted={folders['audeering']}", f"--audio={tmp_path}", f"--out={tmp_path / 'p.csv'}"
    )
    assert result.returncode == 0, result.stderr
    assert "outputs: arousal, dominance, valence on 0..1" in result.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["scale"] == "0..1" for r in rows)
    with open(tmp_path / "p.rejected.csv") as f:
        (refused,) = list(csv.DictReader(f))
    assert refused["file"].endswith("short.wav") and refused["reason"] == "too_short"
    assert {"arousal", "dominance", "valence"} <= set(rows[0])
    predictor = EmotionPredictor.from_converted(folders["audeering"], **SETTINGS)
    direct = predictor.predict(WAVES)
    by_file = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    for i in range(3):
        for dim in predictor.dimensions:
            assert float(by_file[f"{i}.wav"][dim]) == pytest.approx(
                float(direct[dim]["prediction"][i]), abs=1e-5
            )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--speaker=7"], "--speaker needs a run's speaker table"),
        (["--enroll=x"], "--enroll with --converted needs --reference=RUN"),
    ],
)
def test_cli_refusals_are_one_line(models, tmp_path, args, needle):
    _, folders = models
    result = _cli(
        f"--converted={folders['audeering']}",
        f"--audio={tmp_path}",
        f"--out={tmp_path / 'p.csv'}",
        *args,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and needle in result.stderr.splitlines()[0]


@pytest.mark.slow
def test_enrollment_calibrates_the_models_own_outputs(models, smoke_run):
    _, folders = models
    predictor = EmotionPredictor.from_converted(folders["msp_release"], **SETTINGS)
    reference = emotion_reference.reference_from_run(predictor, smoke_run.workdir)
    assert set(reference.references) == {"arousal", "valence"}
    speaker, keys = next(iter(split_keys(smoke_run.workdir, "test_b").items()))
    waves = read_waves(smoke_run.workdir, keys)
    profile = emotion_reference.enroll(predictor, reference, waves, "someone", min_seconds=1.0)
    with open(smoke_run.workdir / "corpus" / "Labels" / "labels_consensus.csv") as f:
        labels = list(csv.DictReader(f))
    for dim, column in (("arousal", "EmoAct"), ("valence", "EmoVal")):
        stats = profile.dimensions[dim]
        assert len(stats.neighbours) == reference.pldc_k
        # mu_bar: the neighbours' mean label, on the model's 0..1 scale, from the labels file.
        means = [
            np.mean(
                [
                    (float(r[column]) - 1) / 6
                    for r in labels
                    if r["SpkrID"] == s and r["Split_Set"] == "Train"
                ]
            )
            for s in stats.neighbours
        ]
        assert stats.mu_bar == pytest.approx(np.mean(means), abs=1e-5)
    preds, _ = predictor.forward(waves)
    out = emotion_reference.calibrate(predictor, preds, profile)
    assert set(out["dominance"]) == {"prediction"}
    mu = out["arousal"]["mu"]
    assert float(np.mean(mu)) == pytest.approx(profile.dimensions["arousal"].mu_bar, abs=1e-5)
    del speaker
