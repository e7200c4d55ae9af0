"""PyTorch <-> Flax conversion: round trips, fairseq naming, safe loading, errors, storage, CLI."""

import argparse
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from fixtures.fairseq_files import fairseq_names
from fixtures.hubert_files import TINY, VARIANTS
from flax.traverse_util import flatten_dict
from safetensors.torch import save_file
from transformers import HubertConfig as HFConfig
from transformers import HubertModel as HFModel

from papt_jax.convert import (
    ConfigInferenceError,
    ConversionError,
    UnsafePickleError,
    UnsafePickleWarning,
    export_hf,
    load_converted,
    load_pytorch,
    load_pytorch_checkpoint,
    mapping,
    params_to_torch,
    save_converted,
)
from papt_jax.convert.fairseq_config import parse_conv_feature_layers
from papt_jax.models import MODEL_PRESETS

LEGACY = {
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": (
        "encoder.pos_conv_embed.conv.weight_g"
    ),
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": (
        "encoder.pos_conv_embed.conv.weight_v"
    ),
}


class Opaque:
    """A class no allow-list knows: unpickling it needs the unsafe opt-in."""

    def __init__(self):
        self.payload = [1, 2, 3]


def _hf_model(variant: str, seed: int = 0) -> HFModel:
    torch.manual_seed(seed)
    model = HFModel(HFConfig(**TINY, **VARIANTS[variant])).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def _numpy_state_dict(model: HFModel) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _flat(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}


def _assert_same_state_dict(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert got[key].tobytes() == value.tobytes(), f"{key} differs"


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def hf_dir(request, tmp_path_factory):
    """(variant, HF model, saved HF directory)."""
    model = _hf_model(request.param)
    path = tmp_path_factory.mktemp(f"hf_{request.param}")
    model.save_pretrained(path)
    return request.param, model, path


@pytest.fixture(scope="module")
def base_hf(tmp_path_factory):
    model = _hf_model("base")
    path = tmp_path_factory.mktemp("hf_base_only")
    model.save_pretrained(path)
    return model, path


def _write_state_dict_dir(path, state_dict: dict[str, np.ndarray], hf_config: dict):
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf_config))
    return path


# --------------------------------------------------------------------------- HF naming


def test_round_trip_is_bitwise_exact(hf_dir):
    _, hf, path = hf_dir
    model, params = load_pytorch(path)
    back = params_to_torch(model.config, params)
    _assert_same_state_dict(back, _numpy_state_dict(hf))


def test_legacy_weight_norm_keys_load_and_round_trip(hf_dir, tmp_path):
    _, hf, path = hf_dir
    state_dict = _numpy_state_dict(hf)
    legacy = {LEGACY.get(k, k): v for k, v in state_dict.items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    legacy_dir = _write_state_dict_dir(tmp_path / "legacy", legacy, hf.config.to_dict())
    model, params = load_pytorch(legacy_dir)
    _, reference = load_pytorch(path)
    flat, ref = _flat(params), _flat(reference)
    assert sorted(flat) == sorted(ref)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)
    assert flat["encoder/pos_conv_embed/conv/weight_g"].shape == (TINY["num_conv_pos_embeddings"],)
    back = params_to_torch(model.config, params, weight_norm_style="legacy")
    _assert_same_state_dict(back, legacy)


def test_export_hf_loads_in_transformers_with_same_outputs(hf_dir, tmp_path):
    _, hf, path = hf_dir
    model, params = load_pytorch(path)
    out = export_hf(model.config, params, tmp_path / "export")
    reloaded, info = HFModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    reloaded.eval()
    _assert_same_state_dict(_numpy_state_dict(reloaded), _numpy_state_dict(hf))
    audio = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf(audio, output_hidden_states=True)
        got = reloaded(audio, output_hidden_states=True)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=0)
    for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not (out / "speaker_embedding.safetensors").exists()


def test_export_hf_legacy_style_loads_in_transformers(base_hf, tmp_path):
    hf, path = base_hf
    model, params = load_pytorch(path)
    out = export_hf(model.config, params, tmp_path / "legacy", weight_norm_style="legacy")
    reloaded = HFModel.from_pretrained(out).eval()
    _assert_same_state_dict(_numpy_state_dict(reloaded), _numpy_state_dict(hf))


def test_speaker_table_zero_init_export_and_reload(base_hf, tmp_path):
    _, path = base_hf
    model, params = load_pytorch(path, num_speakers=5, speaker_fusion="last")
    table = np.asarray(params["speaker_embedding"]["embedding"])
    assert table.shape == (5, TINY["hidden_size"]) and not table.any()
    table = np.random.default_rng(0).standard_normal(table.shape).astype(np.float32)
    params = {**params, "speaker_embedding": {"embedding": table}}
    out = export_hf(model.config, params, tmp_path / "export")
    assert (out / "speaker_embedding.safetensors").is_file()
    HFModel.from_pretrained(out)  # transformers ignores the extra file.
    model2, params2 = load_pytorch(out)
    assert model2.config.num_speakers == 5
    assert model2.config.speaker_fusion == "last"
    assert model2.config.normalize_waveform == model.config.normalize_waveform
    np.testing.assert_array_equal(params2["speaker_embedding"]["embedding"], table)


def test_hf_task_model_prefix_and_head_are_handled(base_hf, tmp_path, caplog):
    hf, path = base_hf
    state_dict = {f"hubert.{k}": v for k, v in _numpy_state_dict(hf).items()}
    state_dict["lm_head.weight"] = np.zeros((7, TINY["hidden_size"]), np.float32)
    state_dict["lm_head.bias"] = np.zeros((7,), np.float32)
    ctc_dir = _write_state_dict_dir(tmp_path / "ctc", state_dict, hf.config.to_dict())
    with caplog.at_level("WARNING"):
        _, params = load_pytorch(ctc_dir)
    assert "dropping 2 parameters" in caplog.text
    _, reference = load_pytorch(path)
    flat, ref = _flat(params), _flat(reference)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)


# --------------------------------------------------------------------------- errors


def _broken_dir(tmp_path, hf, edit):
    state_dict = _numpy_state_dict(hf)
    edit(state_dict)
    return _write_state_dict_dir(tmp_path / "broken", state_dict, hf.config.to_dict())


def _drop(sd):
    del sd["encoder.layers.1.attention.k_proj.bias"]


def _add_unknown(sd):
    sd["encoder.layers.0.attention.extra.weight"] = np.zeros((2, 2), np.float32)


def _add_extra_layer(sd):
    sd["encoder.layers.2.final_layer_norm.weight"] = np.ones((32,), np.float32)


def _transpose(sd):
    key = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    sd[key] = sd[key].T.copy()


@pytest.mark.parametrize(
    "edit, kind, needle",
    [
        (_drop, "missing", "encoder/layers_1/attention/k_proj/bias"),
        (_add_unknown, "unexpected", "encoder.layers.0.attention.extra.weight"),
        (_add_extra_layer, "unexpected", "encoder.layers.2.final_layer_norm.weight"),
        (_transpose, "mis-shaped", "encoder.layers.0.feed_forward.intermediate_dense.weight"),
    ],
)
def test_bad_keys_raise_one_listed_error(base_hf, tmp_path, edit, kind, needle):
    hf, _ = base_hf
    with pytest.raises(ConversionError) as err:
        load_pytorch(_broken_dir(tmp_path, hf, edit))
    assert f"1 {kind}:" in str(err.value)
    assert needle in str(err.value)
    listed = {"missing": err.value.missing, "unexpected": err.value.unexpected}
    listed["mis-shaped"] = err.value.mismatched
    assert [kind] == [name for name, items in listed.items() if items]


def test_all_problems_are_reported_together(base_hf, tmp_path):
    hf, _ = base_hf

    def edit(sd):
        for one in (_drop, _add_unknown, _transpose):
            one(sd)

    with pytest.raises(ConversionError) as err:
        load_pytorch(_broken_dir(tmp_path, hf, edit))
    error = err.value
    assert len(error.missing) == len(error.unexpected) == len(error.mismatched) == 1


# --------------------------------------------------------------------------- fairseq

FINAL_DIM = 12


def _fairseq_state_dict(hf: HFModel, variant: str) -> dict[str, torch.Tensor]:
    out = fairseq_names(hf.state_dict(), VARIANTS[variant]["feat_extract_norm"])
    generator = torch.Generator().manual_seed(1)
    out["final_proj.weight"] = torch.randn(FINAL_DIM, TINY["hidden_size"], generator=generator)
    out["final_proj.bias"] = torch.randn(FINAL_DIM, generator=generator)
    out["label_embs_concat"] = torch.rand(504, FINAL_DIM, generator=generator)
    return out


def _fairseq_model_cfg(variant: str) -> dict:
    return {
        "_name": "hubert",
        "label_rate": 50.0,
        "extractor_mode": "default" if variant == "base" else "layer_norm",
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 4,
        "activation_fn": "gelu",
        "layer_type": "transformer",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "dropout_input": 0.0,
        "final_dim": FINAL_DIM,
        "untie_final_proj": False,
        "layer_norm_first": variant == "large",
        "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
        "conv_bias": variant == "large",
        "conv_pos": 8,
        "conv_pos_groups": 4,
        "conv_pos_batch_norm": False,
    }


def test_fairseq_checkpoint_with_head(hf_dir, tmp_path):
    variant, hf, path = hf_dir
    state_dict = _fairseq_state_dict(hf, variant)
    cfg = {"model": _fairseq_model_cfg(variant), "task": {"normalize": variant == "large"}}
    pt = tmp_path / "hubert.pt"
    torch.save({"cfg": cfg, "args": None, "model": state_dict}, pt)
    ckpt = load_pytorch_checkpoint(pt)
    assert ckpt.source_format == "fairseq"
    ref_model, reference = load_pytorch(path)
    arch = dict(hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0)
    want = ref_model.config.replace(normalize_waveform=variant == "large", **arch)
    assert ckpt.config == want
    flat, ref = _flat(ckpt.params), _flat(reference)
    assert sorted(flat) == sorted(ref)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)
    head = ckpt.head_config
    assert (head.final_dim, head.num_label_rows, head.label_offset) == (FINAL_DIM, 504, 4)
    assert head.num_clusters == 500
    np.testing.assert_array_equal(
        ckpt.head_params["final_proj"]["kernel"], state_dict["final_proj.weight"].numpy().T
    )
    np.testing.assert_array_equal(
        ckpt.head_params["final_proj"]["bias"], state_dict["final_proj.bias"].numpy()
    )
    np.testing.assert_array_equal(
        ckpt.head_params["label_embs_concat"], state_dict["label_embs_concat"].numpy()
    )


def test_fairseq_namespace_args_load_through_the_allow_list(base_hf, tmp_path):
    hf, path = base_hf
    args = argparse.Namespace(
        **_fairseq_model_cfg("base"), normalize=True, task="hubert_pretraining"
    )
    pt = tmp_path / "old.pt"
    torch.save({"args": args, "model": _fairseq_state_dict(hf, "base")}, pt)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(pt, weights_only=True)  # The plain safe loader refuses it...
    ckpt = load_pytorch_checkpoint(pt)  # ...the allow-list does not need the opt-in.
    assert ckpt.config.normalize_waveform is True
    assert ckpt.head_config.num_label_rows == 504
    _, reference = load_pytorch(path)
    np.testing.assert_array_equal(  # every layer's, stacked (the model scans its layers)
        _flat(ckpt.params)["encoder/layers/feed_forward/output_dense/kernel"],
        _flat(reference)["encoder/layers/feed_forward/output_dense/kernel"],
    )


def test_full_unpickling_needs_the_opt_in(base_hf, tmp_path):
    hf, _ = base_hf
    pt = tmp_path / "custom.pt"
    state = {"cfg": {"model": _fairseq_model_cfg("base"), "task": {}}}
    state.update(model=_fairseq_state_dict(hf, "base"), extra_state=Opaque())
    torch.save(state, pt)
    with pytest.raises(UnsafePickleError, match="allow_unsafe_pickle=True"):
        load_pytorch_checkpoint(pt)
    with pytest.warns(UnsafePickleWarning, match="UNSAFE"):
        ckpt = load_pytorch_checkpoint(pt, allow_unsafe_pickle=True)
    assert ckpt.head_params is not None


def test_unsupported_fairseq_architecture_is_named(base_hf, tmp_path):
    hf, _ = base_hf
    cfg = {**_fairseq_model_cfg("base"), "activation_fn": "relu", "target_glu": True}
    pt = tmp_path / "relu.pt"
    torch.save({"cfg": {"model": cfg}, "model": _fairseq_state_dict(hf, "base")}, pt)
    with pytest.raises(ValueError, match="activation_fn='relu'.*target_glu=True"):
        load_pytorch_checkpoint(pt)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(37 * 70, dtype=np.float32).reshape(37, 70).T,  # a dense weight's view
        np.arange(5 * 16, dtype=np.float16).reshape(5, 16).T,  # cast as it is copied
        np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 1, 0),  # a conv's
        np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::3],  # neither C nor F order
        np.arange(12, dtype=np.float64).reshape(3, 4),  # already contiguous
    ],
)
def test_contiguous_copy_equals_numpys(array):
    want = np.ascontiguousarray(array, dtype=np.float32)
    got = mapping.contiguous(array, np.dtype(np.float32))
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_conv_feature_layers_parsed_without_eval():
    spec = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    assert parse_conv_feature_layers(spec) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ("__import__('os').system('true')", "[(512, 10)]", "[(1,2,3)] * x", "[1.5]"):
        with pytest.raises(ValueError):
            parse_conv_feature_layers(bad)


def test_bare_state_dict_needs_preset_or_overrides(base_hf, tmp_path):
    hf, path = base_hf
    pt = tmp_path / "bare.pt"
    torch.save(hf.state_dict(), pt)
    with pytest.raises(ConfigInferenceError, match="preset"):
        load_pytorch(pt)
    model, params = load_pytorch(pt, preset="tiny")
    ref_model, reference = load_pytorch(path)
    shape_fields = ("hidden_size", "intermediate_size", "conv_dim", "num_conv_pos_embeddings")
    for field in shape_fields:
        assert getattr(model.config, field) == getattr(ref_model.config, field)
    assert all(np.array_equal(_flat(params)[k], v) for k, v in _flat(reference).items())


def test_fairseq_without_config_infers_shapes_and_head_width(base_hf, tmp_path):
    hf, _ = base_hf
    pt = tmp_path / "no_cfg.pt"
    torch.save({"cfg": None, "args": None, "model": _fairseq_state_dict(hf, "base")}, pt)
    with pytest.raises(ConfigInferenceError, match="num_attention_heads"):
        load_pytorch_checkpoint(pt)
    ckpt = load_pytorch_checkpoint(pt, preset="tiny")
    assert ckpt.source_format == "fairseq"
    assert ckpt.head_config.final_dim == FINAL_DIM


# --------------------------------------------------------------------------- storage, CLI


@pytest.fixture(scope="module")
def fairseq_pt(tmp_path_factory):
    hf = _hf_model("large", seed=3)
    pt = tmp_path_factory.mktemp("fairseq") / "hubert_large.pt"
    cfg = {"model": _fairseq_model_cfg("large"), "task": {"normalize": True}}
    torch.save({"cfg": cfg, "model": _fairseq_state_dict(hf, "large")}, pt)
    return pt


def test_orbax_save_load_round_trip(fairseq_pt, tmp_path):
    ckpt = load_pytorch_checkpoint(fairseq_pt)
    out = save_converted(ckpt, tmp_path / "flax")
    for name in ("params", "head", "config.json", "head_config.json"):
        assert (out / name).exists(), name
    loaded = load_converted(out)
    assert loaded.config == ckpt.config
    assert loaded.head_config == ckpt.head_config
    assert loaded.source_format == "fairseq"
    for got, want in ((loaded.params, ckpt.params), (loaded.head_params, ckpt.head_params)):
        flat, ref = _flat(got), _flat(want)
        assert sorted(flat) == sorted(ref)
        assert all(np.array_equal(flat[k], ref[k]) for k in ref)
    with pytest.raises(FileExistsError):
        save_converted(ckpt, out)
    save_converted(ckpt, out, overwrite=True)


def _saved_keys(folder) -> set[str]:
    """'/'-joined paths of the arrays Orbax holds in `folder` (read from its metadata)."""
    import orbax.checkpoint as ocp

    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        tree = checkpointer.metadata(folder).item_metadata.tree
    return set(flatten_dict(tree, sep="/"))


def test_converted_folders_hold_layers_one_by_one_and_old_ones_load_scanned(base_hf, tmp_path):
    """A scanned model is stored as PyTorch names it (per layer); a folder written before the
    layers were scanned (remat a boolean, no scan_layers) loads stacked, and unrolled on
    request."""
    _, path = base_hf
    ckpt = load_pytorch_checkpoint(path)
    assert ckpt.config.scan_layers and "layers" in ckpt.params["encoder"]
    out = save_converted(ckpt, tmp_path / "flax")
    keys = _saved_keys(out / "params")
    assert "encoder/layers_1/attention/q_proj/kernel" in keys
    assert not any(k.startswith("encoder/layers/") for k in keys)
    config = json.loads((out / "config.json").read_text())
    del config["scan_layers"]
    config["remat"] = False
    (out / "config.json").write_text(json.dumps(config))
    old = load_converted(out)
    assert old.config == ckpt.config  # scanned, remat 'none'
    flat, ref = _flat(old.params), _flat(ckpt.params)
    assert flat.keys() == ref.keys() and all(np.array_equal(flat[k], ref[k]) for k in ref)
    config["scan_layers"] = False
    (out / "config.json").write_text(json.dumps(config))
    unrolled = load_converted(out)
    assert "layers_1" in unrolled.params["encoder"] and "layers" not in unrolled.params["encoder"]
    # Both layouts give the same PyTorch state dict.
    _assert_same_state_dict(
        params_to_torch(unrolled.config, unrolled.params),
        params_to_torch(ckpt.config, ckpt.params),
    )


@pytest.mark.slow
def test_cli_converts_and_exports(fairseq_pt, tmp_path):
    flax_dir, hf_dir = tmp_path / "flax", tmp_path / "hf"
    run = dict(capture_output=True, text=True, timeout=1800, check=False)
    first = subprocess.run(
        [
            sys.executable,
            "-m",
            "papt_jax.convert",
            "--source",
            str(fairseq_pt),
            "--out",
            str(flax_dir),
        ],
        **run,
    )
    assert first.returncode == 0, first.stderr
    assert "source format: fairseq" in first.stdout
    assert "head kept: yes" in first.stdout
    assert "do_stable_layer_norm = True" in first.stdout
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "papt_jax.convert",
            "--to-hf",
            "--source",
            str(flax_dir),
            "--out",
            str(hf_dir),
        ],
        **run,
    )
    assert second.returncode == 0, second.stderr
    reloaded = HFModel.from_pretrained(hf_dir)
    ckpt = load_pytorch_checkpoint(fairseq_pt)
    _assert_same_state_dict(_numpy_state_dict(reloaded), params_to_torch(ckpt.config, ckpt.params))
    preprocessor = json.loads((hf_dir / "preprocessor_config.json").read_text())
    assert preprocessor["do_normalize"] is True


def test_presets_convert_from_their_hf_configs():
    # The HF config the exporter writes describes the same architecture again (waveform
    # normalisation travels in preprocessor_config.json, given here as the override).
    from papt_jax.convert.hf_config import from_hf_config, to_hf_config

    for name, preset in MODEL_PRESETS.items():
        back = from_hf_config(to_hf_config(preset), normalize_waveform=preset.normalize_waveform)
        assert back == preset, name


@pytest.mark.parametrize(
    ("content", "name", "says"),
    [
        (b"hi there\nmore\n", "a.txt", "it looks like a text file (it starts with 'hi there')"),
        (b"", "empty.pt", "it is empty"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "model.pt.gz", "it starts with the bytes 1f 8b 08 00"),
        (None, "w.bin", "it looks like a safetensors file: give it the .safetensors extension"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_checkpoint_says_what_it_is_not(tmp_path, content, name, says):
    path = tmp_path / name
    if content is None:  # safetensors bytes under a pickle's extension
        save_file({"w": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "papt_jax.convert", "--source", str(path), "--out", str(out)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    first, hint = proc.stderr.strip().splitlines()[-2:]
    assert first == (
        f"error: {path} is not a PyTorch checkpoint: torch.save writes a zip archive (or, in the "
        f"legacy format, a pickle) and this file is neither; {says}"
    )
    assert hint.startswith("hint: give a Hugging Face folder")
    assert "Traceback" not in proc.stderr and "IndexError" not in proc.stderr
