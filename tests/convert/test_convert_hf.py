"""Hugging Face HuBERT directories as transformers writes them: every variant users own.

Models without `masked_spec_embed` (both mask probabilities 0), sharded weights
(`model.safetensors.index.json`, `pytorch_model.bin.index.json`) and the task models
`HubertForCTC` / `HubertForSequenceClassification`, all saved by transformers itself.
"""

import json

import numpy as np
import pytest
import torch
from fixtures.hubert_files import TINY
from safetensors.torch import load_file, save_file
from transformers import HubertConfig as HFConfig
from transformers import HubertForCTC, HubertForSequenceClassification
from transformers import HubertModel as HFModel

from papt_jax.convert import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConversionError,
    load_converted,
    load_pytorch_checkpoint,
    params_to_torch,
    save_converted,
)


def _perturbed(model):
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _hf_model(seed: int = 0, **overrides) -> HFModel:
    torch.manual_seed(seed)
    return _perturbed(HFModel(HFConfig(**TINY, **overrides)))


def _numpy(state_dict) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _assert_encoder_equals(ckpt, hf_state: dict[str, np.ndarray], skip=()):
    back = params_to_torch(ckpt.config, ckpt.params)
    assert sorted(k for k in back if k not in skip) == sorted(k for k in hf_state if k not in skip)
    for key, value in hf_state.items():
        if key not in skip:
            np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A HF model saved whole, for comparing the other layouts with."""
    model = _hf_model()
    path = tmp_path_factory.mktemp("whole")
    model.save_pretrained(path)
    return model, path


def test_model_saved_without_mask_embedding_converts_and_says_so(tmp_path, caplog):
    model = _hf_model(mask_time_prob=0.0, mask_feature_prob=0.0)
    model.save_pretrained(tmp_path / "hf")
    assert "masked_spec_embed" not in load_file(tmp_path / "hf" / "model.safetensors")
    with caplog.at_level("INFO"):
        ckpt = load_pytorch_checkpoint(tmp_path / "hf")
    _assert_encoder_equals(ckpt, _numpy(model.state_dict()), skip=("masked_spec_embed",))
    embed = np.asarray(ckpt.params["masked_spec_embed"])
    assert embed.shape == (TINY["hidden_size"],)
    assert embed.min() >= 0.0 and embed.max() < 1.0 and embed.std() > 0.1  # uniform [0, 1)
    assert any("masked_spec_embed" in note and "uniform" in note for note in ckpt.notes)
    assert "masked_spec_embed is not in the checkpoint" in caplog.text
    out = save_converted(ckpt, tmp_path / "flax")
    notes = json.loads((out / "conversion.json").read_text())["notes"]
    assert any("masked_spec_embed" in note for note in notes)
    assert load_converted(out).notes == ckpt.notes


def test_mask_embedding_missing_although_masking_is_on_is_an_error(reference, tmp_path):
    model, path = reference
    assert model.config.mask_time_prob > 0
    (tmp_path / "hf").mkdir()
    tensors = load_file(path / "model.safetensors")
    del tensors["masked_spec_embed"]
    save_file(tensors, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "hf" / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ConversionError, match="masked_spec_embed"):
        load_pytorch_checkpoint(tmp_path / "hf")


def test_sharded_safetensors_read_through_the_index(reference, tmp_path):
    model, path = reference
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    index = tmp_path / "sharded" / "model.safetensors.index.json"
    assert index.is_file() and not (tmp_path / "sharded" / "model.safetensors").exists()
    assert len(set(json.loads(index.read_text())["weight_map"].values())) > 1
    for source in (tmp_path / "sharded", index):  # The folder or the index file itself.
        ckpt = load_pytorch_checkpoint(source)
        assert ckpt.source_format == "hf_safetensors"
        assert any("model.safetensors.index.json" in note for note in ckpt.notes)
        _assert_encoder_equals(ckpt, _numpy(model.state_dict()))


def _write_sharded_bin(folder, model, parts: int = 3):
    folder.mkdir()
    state = model.state_dict()
    keys = sorted(state)
    weight_map = {}
    for part in range(parts):
        name = f"pytorch_model-{part + 1:05d}-of-{parts:05d}.bin"
        chunk = {k: state[k].clone() for k in keys[part::parts]}
        torch.save(chunk, folder / name)
        weight_map.update(dict.fromkeys(chunk, name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(model.config.to_json_string())
    return folder


def test_sharded_pytorch_bin_read_through_the_index(reference, tmp_path):
    model, _ = reference
    folder = _write_sharded_bin(tmp_path / "bin", model)
    ckpt = load_pytorch_checkpoint(folder)
    assert ckpt.source_format == "hf_bin"
    _assert_encoder_equals(ckpt, _numpy(model.state_dict()))


def test_sharded_index_problems_are_named(reference, tmp_path):
    model, _ = reference
    folder = _write_sharded_bin(tmp_path / "bin", model)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    index["weight_map"]["encoder.extra.weight"] = "pytorch_model-00001-of-00003.bin"
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointFormatError, match=r"listed but absent \['encoder.extra"):
        load_pytorch_checkpoint(folder)
    del index["weight_map"]["encoder.extra.weight"]
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (folder / "pytorch_model-00002-of-00003.bin").unlink()
    with pytest.raises(CheckpointNotFoundError, match="pytorch_model-00002-of-00003.bin"):
        load_pytorch_checkpoint(folder)


def test_empty_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointFormatError, match="holds no model.safetensors"):
        load_pytorch_checkpoint(tmp_path)


@pytest.mark.parametrize("task", ["ctc", "classification"])
def test_task_models_convert_their_encoder(task, tmp_path):
    torch.manual_seed(1)
    if task == "ctc":
        model = HubertForCTC(HFConfig(**TINY, vocab_size=12))
        head = {"lm_head.weight", "lm_head.bias"}
    else:
        config = HFConfig(**TINY, num_labels=4, use_weighted_layer_sum=True, classifier_proj_size=8)
        model = HubertForSequenceClassification(config)
        head = {
            "layer_weights",
            "projector.weight",
            "projector.bias",
            "classifier.weight",
            "classifier.bias",
        }
    _perturbed(model)
    model.save_pretrained(tmp_path / task)
    ckpt = load_pytorch_checkpoint(tmp_path / task)
    _assert_encoder_equals(ckpt, _numpy(model.hubert.state_dict()))
    (note,) = [n for n in ckpt.notes if "downstream task head" in n]
    assert all(key in note for key in head)
