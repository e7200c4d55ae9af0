"""The two published emotion models, in every layout they ship in, are read with their heads.

Files are built by `fixtures.emotion_files` from the published model classes' descriptions
(audEERING's model card, the MSP-Podcast challenge's net/ and utils/) with random weights
and the exact parameter names. What is checked here is the PyTorch side: the family, the
encoder under HF names, the head's arrays and config (labels, scale, dropout, input
statistics), and the refusals.
"""

import pickle

import numpy as np
import pytest
from fixtures.emotion_files import (
    audeering_config,
    audeering_model,
    msp_model,
    write_audeering,
    write_msp_package,
    write_msp_release,
    write_norm_stat,
)
from fixtures.family_files import tiny_config

from papt_jax.convert import CheckpointFormatError, UnsafePickleError
from papt_jax.convert.emotion_models import MSP_RULES, read_norm_stat
from papt_jax.convert.mapping import torch_to_flax
from papt_jax.convert.sources import WAVLM_LARGE_HF_CONFIG, classify
from papt_jax.convert.torch_io import read_checkpoint

# The fixture's tiny WavLM, given as the backbone the challenge files do not describe.
BACKBONE = tiny_config("wavlm", "stable", conv_bias=False).to_dict()
MEAN, STD = -2.7e-05, 0.0917


def _numpy(state_dict) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].tobytes() == value.tobytes(), key


@pytest.mark.parametrize("legacy_bin", [True, False])
def test_audeering_folder(legacy_bin, tmp_path):
    model = audeering_model()
    folder = write_audeering(tmp_path / "w2v2-L-robust-12", model, legacy_bin=legacy_bin)
    source = classify(read_checkpoint(folder), str(folder))
    assert source.naming.family == "wav2vec2"
    _assert_same(source.encoder, _numpy(model.wav2vec2.state_dict()))
    head = _numpy(model.classifier.state_dict())
    _assert_same(source.emotion_head, {f"classifier.{k}": v for k, v in head.items()})
    assert source.emotion_head_config == {
        "kind": "audeering",
        "labels": ["arousal", "dominance", "valence"],
        "label_range": [0.0, 1.0],
        "pooling": "mean",
        "dropout": 0.1,
    }
    values = source.config_values
    assert values["normalize_waveform"] is True  # Its processor normalises each waveform.
    assert values["do_stable_layer_norm"] and values["feat_extract_norm"] == "layer"
    assert not any("downstream" in note for note in source.notes)


def test_audeering_labels_other_than_the_three_dimensions_are_refused(tmp_path):
    config = audeering_config(id2label={"0": "happy", "1": "sad", "2": "angry"})
    folder = write_audeering(tmp_path / "m", audeering_model(config))
    with pytest.raises(CheckpointFormatError, match=r"predicts \['happy', 'sad', 'angry'\]"):
        classify(read_checkpoint(folder), str(folder))


def _check_msp(source, model, dropout=0.5):
    assert source.naming.family == "wavlm"
    _assert_same(source.encoder, _numpy(model.ssl_model.state_dict()))
    head = {
        **{f"pool_model.{k}": v for k, v in _numpy(model.pool_model.state_dict()).items()},
        **{f"ser_model.{k}": v for k, v in _numpy(model.ser_model.state_dict()).items()},
    }
    _assert_same(source.emotion_head, head)
    width = model.ssl_model.config.hidden_size
    assert source.emotion_head_config == {
        "kind": "msp_challenge",
        "labels": ["arousal", "dominance", "valence"],
        "label_range": [0.0, 1.0],
        "pooling": "attentive_statistics",
        "hidden_dim": width,
        "num_layers": 1,
        "dropout": dropout,
        "input_mean": MEAN,
        "input_std": STD,
        "input_std_eps": 1e-6,
    }
    # Normalised with the training audio's statistics, never per utterance.
    assert source.config_values["normalize_waveform"] is False
    expected = {
        "pool_model/sap_linear/kernel": (width, width),
        "pool_model/sap_linear/bias": (width,),
        "pool_model/attention": (width, 1),
        "ser_model/fc_0/linear/kernel": (2 * width, width),
        "ser_model/fc_0/linear/bias": (width,),
        "ser_model/fc_0/layer_norm/scale": (width,),
        "ser_model/fc_0/layer_norm/bias": (width,),
        "ser_model/out/kernel": (width, 3),
        "ser_model/out/bias": (3,),
    }
    shapes = {k: np.zeros(v, np.float32) for k, v in expected.items()}
    assert sorted(torch_to_flax(source.emotion_head, shapes, MSP_RULES)) == sorted(expected)


def test_msp_release_folder(tmp_path):
    model = msp_model()
    folder = write_msp_release(tmp_path / "dim_ser" / "7", model, MEAN, STD)
    source = classify(read_checkpoint(folder), str(folder), backbone_config=BACKBONE)
    _check_msp(source, model)
    assert source.source_format == "msp_release"


def test_msp_hf_package(tmp_path):
    model = msp_model()
    folder = write_msp_package(tmp_path / "SER-Odyssey", model, MEAN, STD)
    source = classify(read_checkpoint(folder), str(folder), backbone_config=BACKBONE)
    _check_msp(source, model)
    assert source.source_format == "hf_safetensors"


def test_msp_backbone_defaults_to_wavlm_large(tmp_path):
    folder = write_msp_release(tmp_path / "m", msp_model(), MEAN, STD)
    source = classify(read_checkpoint(folder), str(folder))
    values = source.config_values
    assert (values["hidden_size"], values["num_hidden_layers"]) == (1024, 24)
    assert values["do_stable_layer_norm"] and values["feat_extract_norm"] == "layer"
    assert not values["conv_bias"]
    assert (values["num_buckets"], values["max_bucket_distance"]) == (320, 800)
    assert WAVLM_LARGE_HF_CONFIG["model_type"] == "wavlm"
    assert any("microsoft/wavlm-large" in note for note in source.notes)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_norm_stat_pickles_of_numpy_scalars_are_read_exactly(dtype, tmp_path):
    path = write_norm_stat(tmp_path / "train_norm_stat.pkl", MEAN, STD, dtype=dtype)
    assert read_norm_stat(path) == (float(dtype(MEAN)), float(dtype(STD)))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.target}",)


def test_a_norm_stat_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_msp_release(tmp_path / "m", msp_model(), MEAN, STD)
    target = tmp_path / "pwned"
    with open(folder / "train_norm_stat.pkl", "wb") as f:
        pickle.dump((_Evil(target), 1.0), f)
    with pytest.raises(UnsafePickleError, match="refers to posix.system"):
        read_checkpoint(folder)
    assert not target.exists()


def test_msp_problems_are_named(tmp_path):
    folder = write_msp_release(tmp_path / "m", msp_model(), MEAN, STD)
    (folder / "train_norm_stat.pkl").unlink()
    with pytest.raises(CheckpointFormatError, match="no train_norm_stat.pkl"):
        read_checkpoint(folder)
    write_norm_stat(folder / "train_norm_stat.pkl", MEAN, 0.0)
    with pytest.raises(CheckpointFormatError, match="is not usable"):
        read_checkpoint(folder)
    package = write_msp_package(tmp_path / "p", msp_model(), MEAN, STD, ssl_type="wavlm-base")
    with pytest.raises(CheckpointFormatError, match="ssl_type='wavlm-base'"):
        classify(read_checkpoint(package), str(package))
    wrong = tiny_config("wav2vec2", "stable").to_dict()
    release = write_msp_release(tmp_path / "r", msp_model(), MEAN, STD)
    with pytest.raises(CheckpointFormatError, match="describes wav2vec2"):
        classify(read_checkpoint(release), str(release), backbone_config=wrong)
