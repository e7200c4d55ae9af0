"""wav2vec2, WavLM and data2vec-audio checkpoints convert both ways, heads included.

Tiny models saved by transformers (and fairseq / release files built by the fixtures)
are converted with the public API, stored and read back, exported to Hugging Face
folders that transformers loads, and compared with transformers' own outputs.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from fixtures import hubert_files
from fixtures.fairseq_files import write_checkpoints
from fixtures.family_files import (
    fairseq_wav2vec2_names,
    hf_model,
    wav2vec2_model_cfg,
    wav2vec2_task_cfg,
    write_wavlm_release,
)

from papt_jax.convert import (
    ConfigInferenceError,
    export_hf,
    load_converted,
    load_pytorch_checkpoint,
    save_converted,
)
from papt_jax.models import HubertModel

MODEL_CLASS = {
    "wav2vec2": "Wav2Vec2Model",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
}
FAMILY = {"wav2vec2": "wav2vec2", "wavlm": "wavlm", "data2vec-audio": "data2vec_audio"}
CASES = [
    ("wav2vec2", "group"),
    ("wav2vec2", "stable"),
    ("wavlm", "group"),
    ("wavlm", "stable"),
    ("data2vec-audio", "group"),
]
AUDIO = np.random.default_rng(0).normal(0, 0.1, (1, 4800)).astype(np.float32)


def _difference(torch_model, ckpt) -> float:
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(AUDIO), output_hidden_states=True)
    out = HubertModel(ckpt.config).apply(
        {"params": ckpt.params}, jnp.asarray(AUDIO), output_hidden_states=True
    )
    pairs = zip(
        (*out.hidden_states, out.last_hidden_state),
        (*ref.hidden_states, ref.last_hidden_state),
        strict=True,
    )
    return max(float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in pairs)


@pytest.mark.slow
@pytest.mark.parametrize("family, layout", CASES)
def test_hf_folders_convert_store_and_export_both_ways(family, layout, tmp_path):
    kwargs = {} if family == "data2vec-audio" else {"layout": layout}
    model = hf_model(family, **kwargs)
    model.save_pretrained(tmp_path / "hf")
    ckpt = load_pytorch_checkpoint(tmp_path / "hf")
    assert ckpt.config.family == FAMILY[family]
    assert _difference(model, ckpt) < 1e-5
    stored = load_converted(save_converted(ckpt, tmp_path / "flax"))
    assert stored.config == ckpt.config
    export_hf(stored.config, stored.params, tmp_path / "back")
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == [MODEL_CLASS[family]]
    reloaded = getattr(transformers, MODEL_CLASS[family]).from_pretrained(tmp_path / "back")
    state, original = reloaded.state_dict(), model.state_dict()
    assert sorted(state) == sorted(original)
    assert all(torch.equal(state[k], original[k]) for k in original)
    assert _difference(reloaded.eval(), ckpt) < 1e-5


@pytest.mark.slow
def test_pretraining_folder_keeps_the_quantizer_through_storage(tmp_path):
    model = hf_model("wav2vec2", "ForPreTraining", layout="stable", feat_quantizer_dropout=0.2)
    model.save_pretrained(tmp_path / "hf")
    ckpt = load_pytorch_checkpoint(tmp_path / "hf")
    stored = load_converted(save_converted(ckpt, tmp_path / "flax"))
    config = model.config
    assert stored.quantizer_config.num_codevector_groups == config.num_codevector_groups
    assert stored.quantizer_config.codevector_dim == config.codevector_dim
    # Its quantizer-input dropout, which `pretrain.quantizer_dropout=-1` continues with.
    assert stored.quantizer_config.feat_quantizer_dropout == 0.2
    quantizer = stored.quantizer_params
    codevectors = model.quantizer.codevectors.detach().numpy()[0]
    np.testing.assert_array_equal(np.asarray(quantizer["quantizer"]["codevectors"]), codevectors)
    np.testing.assert_array_equal(
        np.asarray(quantizer["project_hid"]["kernel"]),
        model.project_hid.weight.detach().numpy().T,
    )
    assert _difference(model.wav2vec2, stored) < 1e-5


@pytest.mark.slow
def test_fairseq_wav2vec2_and_wavlm_release_files_equal_transformers(tmp_path):
    w2v = hf_model("wav2vec2", "ForPreTraining", layout="group", seed=5)
    state = fairseq_wav2vec2_names(w2v.state_dict(), "group")
    cfg = {"model": wav2vec2_model_cfg(w2v.config), "task": wav2vec2_task_cfg(False)}
    (path,) = write_checkpoints(
        [dict(out=tmp_path / "w2v.pt", model_state=state, cfg=cfg, task_state_key=None)]
    )
    ckpt = load_pytorch_checkpoint(path, hidden_dropout=0.0)
    assert ckpt.config.family == "wav2vec2" and ckpt.quantizer_params is not None
    assert _difference(w2v.wav2vec2, ckpt) < 1e-5
    wavlm = hf_model("wavlm", layout="stable", seed=6)
    ckpt = load_pytorch_checkpoint(write_wavlm_release(tmp_path / "WavLM.pt", wavlm, False))
    assert ckpt.config.family == "wavlm"
    assert _difference(wavlm, ckpt) < 1e-5


@pytest.mark.slow
def test_bare_state_dict_needs_a_preset_of_its_family(tmp_path):
    model = hf_model("wavlm", layout="stable")
    torch.save(model.state_dict(), tmp_path / "wavlm.bin")
    with pytest.raises(ConfigInferenceError, match="preset 'tiny' is a hubert encoder"):
        load_pytorch_checkpoint(tmp_path / "wavlm.bin", preset="tiny")
    ckpt = load_pytorch_checkpoint(
        tmp_path / "wavlm.bin", preset="wavlm-tiny", do_stable_layer_norm=True
    )
    assert ckpt.config.family == "wavlm"
    assert _difference(model, ckpt) < 1e-5


def test_folders_written_before_families_load_as_hubert(tmp_path):
    hubert_files.hf_model("base", 0).save_pretrained(tmp_path / "hubert")
    out = save_converted(load_pytorch_checkpoint(tmp_path / "hubert"), tmp_path / "flax")
    config = json.loads((out / "config.json").read_text())
    for key in (
        "family",
        "num_buckets",
        "max_bucket_distance",
        "num_conv_pos_layers",
        "input_shift",
        "input_scale",
    ):
        config.pop(key)
    (out / "config.json").write_text(json.dumps(config))
    assert load_converted(out).config.family == "hubert"


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "papt_jax.convert", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.mark.slow
def test_cli_converts_and_exports_a_family_and_refuses_what_it_does_not_know(tmp_path):
    """The command line, end to end: the challenge model's release folder with
    --backbone_config, its export to a WavLM folder transformers loads, and one `error:`
    line with exit code 2 for a config this port does not implement."""
    from fixtures.emotion_files import msp_model, write_msp_release
    from fixtures.family_files import tiny_config

    backbone = tmp_path / "backbone.json"
    backbone.write_text(json.dumps(tiny_config("wavlm", "stable", conv_bias=False).to_dict()))
    model = msp_model()
    release = write_msp_release(tmp_path / "release", model, -2.7e-05, 0.0917)
    flax_dir, hf_dir = tmp_path / "flax", tmp_path / "hf"
    result = _cli(
        "--source", str(release), "--out", str(flax_dir), "--backbone_config", str(backbone)
    )
    assert result.returncode == 0, result.stderr
    assert "encoder family: wavlm" in result.stdout
    assert "emotion head: msp_challenge, predicts" in result.stdout
    assert "predicts arousal, dominance, valence on 0..1" in result.stdout
    result = _cli("--to_hf", "--source", str(flax_dir), "--out", str(hf_dir))
    assert result.returncode == 0, result.stderr
    assert "note: the emotion head has no place in the HF encoder model" in result.stdout
    assert "transformers does not apply it" in result.stdout  # the fixed input normalisation
    reloaded = transformers.WavLMModel.from_pretrained(hf_dir)
    state, original = reloaded.state_dict(), model.ssl_model.state_dict()
    assert all(torch.equal(state[k], original[k]) for k in original)

    folder = tmp_path / "adapter"
    hf_model("wav2vec2", layout="stable").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "add_adapter": True}))
    result = _cli("--source", str(folder), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "add_adapter=True" in lines[0]
    assert all(line.startswith(("error: ", "hint: ")) for line in lines)
    assert not (tmp_path / "x").exists()
