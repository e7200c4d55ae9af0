"""Every published layout of wav2vec2, WavLM and data2vec-audio is recognised and named.

The files are written by transformers itself (`save_pretrained`), by the fairseq pickler
of `fixtures.fairseq_files`, or as the WavLM release writes them; the expected names come
from the fixtures' own renamings (written from fairseq's and unilm's sources), never from
`papt_jax.convert`. What is checked here is the PyTorch side: which family a file is, that
its encoder arrives under that family's HF names bit for bit, which heads are kept or
dropped, the config values read, the mapping tables' Flax names, and every refusal.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from fixtures.fairseq_files import write_checkpoints
from fixtures.family_files import (
    fairseq_wav2vec2_names,
    hf_model,
    tiny_config,
    wav2vec2_ctc_cfg,
    wav2vec2_model_cfg,
    wav2vec2_task_cfg,
    write_wavlm_release,
)

from papt_jax.convert import CheckpointFormatError, load_pytorch_checkpoint, mapping
from papt_jax.convert.hf_config import hf_config_dict, read_hf_config
from papt_jax.convert.sources import classify
from papt_jax.convert.torch_io import read_checkpoint
from papt_jax.models import HubertModel

FAMILY_OF = {"wav2vec2": "wav2vec2", "wavlm": "wavlm", "data2vec-audio": "data2vec_audio"}
PREFIX = {"wav2vec2": "wav2vec2.", "wavlm": "wavlm.", "data2vec-audio": "data2vec_audio."}
CASES = [
    ("wav2vec2", "group"),
    ("wav2vec2", "stable"),
    ("wavlm", "group"),
    ("wavlm", "stable"),
    ("data2vec-audio", "group"),
]


def _numpy(state_dict) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in state_dict.items()}


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].shape == value.shape, key
        assert got[key].tobytes() == value.tobytes(), key


def _source(path, **kwargs):
    return classify(read_checkpoint(path), str(path), **kwargs)


def _expected_values(config) -> dict:
    """The encoder config values a transformers config stands for (the tests' own reading)."""
    data2vec = config.model_type == "data2vec-audio"
    values = {
        key: getattr(config, key)
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "conv_bias",
            "layer_norm_eps",
            "hidden_dropout",
            "attention_dropout",
            "activation_dropout",
            "feat_proj_dropout",
            "num_conv_pos_embedding_groups",
        )
    }
    values.update(
        conv_dim=list(config.conv_dim),
        conv_kernel=list(config.conv_kernel),
        conv_stride=list(config.conv_stride),
        feat_extract_norm="layer" if data2vec else config.feat_extract_norm,
        do_stable_layer_norm=False if data2vec else config.do_stable_layer_norm,
        num_conv_pos_embeddings=(
            config.conv_pos_kernel_size if data2vec else config.num_conv_pos_embeddings
        ),
        normalize_waveform=False,
    )
    if data2vec:
        values["num_conv_pos_layers"] = config.num_conv_pos_embeddings
    if config.model_type == "wavlm":
        values.update(
            num_buckets=config.num_buckets, max_bucket_distance=config.max_bucket_distance
        )
    return values


def _listify(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@pytest.mark.parametrize("family, layout", CASES)
@pytest.mark.parametrize("task", ["Model", "ForCTC", "ForSequenceClassification"])
def test_hf_folders_arrive_under_their_family_names(family, layout, task, tmp_path):
    model = hf_model(family, task, **({} if family == "data2vec-audio" else {"layout": layout}))
    model.save_pretrained(tmp_path / "hf")
    source = _source(tmp_path / "hf")
    assert source.naming.family == FAMILY_OF[family]
    encoder = model if task == "Model" else getattr(model, PREFIX[family][:-1])
    _assert_same(source.encoder, _numpy(encoder.state_dict()))
    assert _listify(source.config_values) == _expected_values(model.config)
    assert not source.pretrain_head and not source.emotion_head
    prefix = "" if encoder is model else PREFIX[family]
    dropped = set(model.state_dict()) - {prefix + k for k in encoder.state_dict()}
    assert bool(dropped) == (task != "Model")
    if dropped:
        (note,) = [n for n in source.notes if "downstream task head" in n]
        assert all(key in note for key in dropped)


def test_wav2vec2_pretraining_folder_keeps_its_quantizer(tmp_path):
    model = hf_model("wav2vec2", "ForPreTraining", layout="stable")
    model.save_pretrained(tmp_path / "hf")
    source = _source(tmp_path / "hf")
    state = _numpy(model.state_dict())
    head = {k: v for k, v in state.items() if not k.startswith("wav2vec2.")}
    assert sorted(head) == [
        "project_hid.bias",
        "project_hid.weight",
        "project_q.bias",
        "project_q.weight",
        "quantizer.codevectors",
        "quantizer.weight_proj.bias",
        "quantizer.weight_proj.weight",
    ]
    _assert_same(source.pretrain_head, head)
    _assert_same(source.encoder, _numpy(model.wav2vec2.state_dict()))
    assert source.pretrain_head_config == _head_values(model.config)


def _head_values(config) -> dict:
    return {
        "num_codevector_groups": config.num_codevector_groups,
        "num_codevectors_per_group": config.num_codevectors_per_group,
        "codevector_dim": config.codevector_dim,
        "proj_codevector_dim": config.proj_codevector_dim,
        "contrastive_logits_temperature": config.contrastive_logits_temperature,
        "feat_quantizer_dropout": config.feat_quantizer_dropout,
    }


# ------------------------------------------------------------------- the tables' Flax names


def _flax_name(key: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """The documented Flax path and shape of a HF key (the tests' own rules)."""
    if key == "encoder.layers.0.attention.rel_attn_embed.weight":
        return "encoder/rel_attn_embed/embedding", shape
    if key == "quantizer.codevectors":
        return "quantizer/codevectors", shape[1:]
    path = re.sub(r"\.(\d+)\.", r"_\1/", key).replace(".", "/")
    parts = path.split("/")
    leaf, module = parts[-1], parts[-2] if len(parts) > 1 else ""
    if path.endswith("parametrizations/weight/original0"):
        return path.replace("parametrizations/weight/original0", "weight_g"), (shape[2],)
    if path.endswith("parametrizations/weight/original1"):
        return path.replace("parametrizations/weight/original1", "weight_v"), shape[::-1]
    if leaf == "gru_rel_pos_const":
        return path, (shape[1],)
    if leaf == "weight" and module in ("layer_norm", "final_layer_norm"):
        return path[: -len("weight")] + "scale", shape
    if leaf == "weight" and len(shape) == 3:  # A conv.
        return path[: -len("weight")] + "kernel", shape[::-1]
    if leaf == "weight":
        return path[: -len("weight")] + "kernel", shape[::-1]
    return path, shape


@pytest.mark.parametrize(
    "family, task, layout",
    [
        ("wav2vec2", "ForPreTraining", "group"),
        ("wavlm", "Model", "stable"),
        ("data2vec-audio", "Model", "group"),
    ],
)
def test_tables_give_the_documented_flax_names_and_invert_exactly(family, task, layout, tmp_path):
    kwargs = {} if family == "data2vec-audio" else {"layout": layout}
    model = hf_model(family, task, **kwargs)
    model.save_pretrained(tmp_path / "hf")
    source = _source(tmp_path / "hf")
    naming = source.naming
    names = {}
    for part, rules in (
        (source.encoder, naming.rules),
        (source.pretrain_head, naming.pretrain_rules),
    ):
        expected = {}
        for key, value in part.items():
            path, shape = _flax_name(key, value.shape)
            expected[path] = np.zeros(shape, np.float32)
        flat = mapping.torch_to_flax(part, expected, rules)
        assert sorted(flat) == sorted(expected)
        _assert_same(mapping.flax_to_torch(flat, rules), part)
        names.update(expected)
    expected = names
    if family == "wavlm":
        heads = model.config.num_attention_heads
        assert not any("rel_attn_embed" in k for k in source.encoder if "layers.0." not in k)
        assert expected["encoder/rel_attn_embed/embedding"].shape == (320, heads)
        assert expected["encoder/layers_1/attention/gru_rel_pos_const"].shape == (heads,)
        assert "encoder/layers_1/attention/gru_rel_pos_linear/kernel" in expected
    if family == "data2vec-audio":
        assert expected["encoder/pos_conv_embed/layers_1/conv/kernel"].shape == (5, 8, 32)
        assert not any("layer_norm" in k for k in source.encoder if "pos_conv" in k)


# ------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("family, layout", CASES)
def test_hf_config_round_trips_through_transformers(family, layout):
    config = tiny_config(family, layout)
    naming, values, notes = read_hf_config(config.to_dict())
    assert naming.family == FAMILY_OF[family]
    assert any("preprocessor_config.json" in note for note in notes)
    back = hf_config_dict(naming, values)
    loaded = getattr(transformers, type(config).__name__)(**back)
    assert loaded.model_type == config.model_type
    assert read_hf_config(loaded.to_dict())[1] == values
    assert back["architectures"] == [naming.hf_architecture]


def test_waveform_normalisation_comes_from_the_preprocessor():
    config = tiny_config("wavlm", "stable").to_dict()
    for do_normalize in (True, False):
        _, values, notes = read_hf_config(config, {"do_normalize": do_normalize})
        assert values["normalize_waveform"] is do_normalize and not notes


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"model_type": "whisper"}, "describes a 'whisper' model: not an encoder family"),
        ({"model_type": None}, "has no model_type"),
        ({"hidden_act": "relu"}, r"hidden_act='relu' \(only 'gelu' is supported\)"),
        ({"add_adapter": True}, r"add_adapter=True \(only False is supported\)"),
    ],
)
def test_configs_this_port_does_not_implement_are_refused_by_name(changes, needle):
    config = {**tiny_config("wav2vec2", "stable").to_dict(), **changes}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(CheckpointFormatError, match=needle) as err:
        read_hf_config(config)
    assert "\n" not in err.value.message


@pytest.mark.slow
def test_stable_layer_norm_wav2vec2_is_converted_as_wav2vec2_and_equals_it(tmp_path):
    """The issue's case: such a folder used to convert silently as HuBERT, off by up to 2.7
    (its waveform was normalised inside the model although transformers' model does not)."""
    model = hf_model("wav2vec2", layout="stable")
    model.save_pretrained(tmp_path / "hf")
    assert _source(tmp_path / "hf").naming.family == "wav2vec2"
    ckpt = load_pytorch_checkpoint(tmp_path / "hf")
    assert ckpt.config.family == "wav2vec2" and not ckpt.config.normalize_waveform
    assert any("preprocessor_config.json" in note for note in ckpt.notes)
    audio = np.random.default_rng(0).normal(0, 0.1, (1, 4000)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(audio), output_hidden_states=True)
    out = HubertModel(ckpt.config).apply(
        {"params": ckpt.params}, jnp.asarray(audio), output_hidden_states=True
    )
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-5)


# -------------------------------------------------------------------- fairseq and release


@pytest.fixture(scope="module")
def fairseq_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fairseq_w2v")
    models, jobs, names = {}, [], []
    for layout in ("group", "stable"):
        model = hf_model("wav2vec2", "ForPreTraining", layout=layout, seed=7)
        models[layout] = model
        state = fairseq_wav2vec2_names(model.state_dict(), model.config.feat_extract_norm)
        normalize = layout == "stable"
        cfg = {"model": wav2vec2_model_cfg(model.config), "task": wav2vec2_task_cfg(normalize)}
        for style in ("dictconfig", "dict"):
            names.append(f"{layout}_{style}")
            jobs.append(
                dict(
                    out=folder / f"{names[-1]}.pt",
                    model_state=state,
                    cfg=cfg,
                    cfg_style=style,
                    task_state_key=None,
                )
            )
        # Fine-tuned: Wav2VecCtc with the pre-trained config nested in w2v_args; this
        # (older) fairseq kept the quantizer and projections inside the encoder.
        tuned = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()}
        tuned["w2v_encoder.proj.weight"] = torch.randn(12, 32)
        tuned["w2v_encoder.proj.bias"] = torch.randn(12)
        outer = {
            "model": wav2vec2_ctc_cfg(cfg, normalize),
            "task": wav2vec2_task_cfg(normalize, _name="audio_finetuning", labels="ltr"),
        }
        names.append(f"{layout}_finetuned")
        jobs.append(
            dict(
                out=folder / f"{names[-1]}.pt",
                model_state=tuned,
                cfg=outer,
                label_symbols=list("abc"),
                task_state_key="target_dictionary",
            )
        )
    old = {**wav2vec2_model_cfg(models["group"].config), **wav2vec2_task_cfg(False)}
    old.pop("_name")
    old["arch"] = "wav2vec2"
    state = fairseq_wav2vec2_names(models["group"].state_dict(), "group")
    names.append("group_namespace")
    jobs.append(dict(out=folder / "group_namespace.pt", model_state=state, args=old))
    bad = {
        "model": wav2vec2_model_cfg(models["group"].config, quantize_input=True, pos_conv_depth=5),
        "task": wav2vec2_task_cfg(False),
    }
    names.append("unsupported")
    jobs.append(dict(out=folder / "unsupported.pt", model_state=state, cfg=bad))
    paths = write_checkpoints(jobs)
    return models, dict(zip(names, paths, strict=True))


@pytest.mark.parametrize(
    "name",
    ["group_dictconfig", "group_dict", "stable_dictconfig", "stable_dict", "group_namespace"],
)
def test_fairseq_wav2vec2_pretraining_files(fairseq_files, name):
    models, files = fairseq_files
    layout = name.split("_")[0]
    model = models[layout]
    source = _source(files[name])
    assert source.naming.family == "wav2vec2" and source.source_format == "fairseq"
    state = _numpy(model.state_dict())
    _assert_same(source.encoder, {k[9:]: v for k, v in state.items() if k.startswith("wav2vec2.")})
    _assert_same(
        source.pretrain_head, {k: v for k, v in state.items() if not k.startswith("wav2vec2.")}
    )
    expected = _expected_values(model.config)
    expected.update(
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.1,
        normalize_waveform=layout == "stable",
        layer_norm_eps=expected["layer_norm_eps"],
    )
    got = _listify(source.config_values)
    expected.pop("layer_norm_eps")
    assert got == expected
    # The quantizer's own input dropout (fairseq `dropout_features`) is kept with it.
    assert source.pretrain_head_config == {
        **_head_values(model.config),
        "feat_quantizer_dropout": 0.1,
    }


@pytest.mark.parametrize("layout", ["group", "stable"])
def test_fairseq_wav2vec2_finetuned_files(fairseq_files, layout):
    models, files = fairseq_files
    source = _source(files[f"{layout}_finetuned"])
    assert source.naming.family == "wav2vec2" and source.source_format == "fairseq_finetuned"
    state = _numpy(models[layout].wav2vec2.state_dict())
    _assert_same(source.encoder, state)
    assert not source.pretrain_head
    assert any("w2v_encoder.proj.weight" in n for n in source.notes)
    (leftover,) = [n for n in source.notes if "left in the fine-tuned encoder" in n]
    assert "quantizer.vars" in leftover and "final_proj.weight" in leftover
    # The fine-tuning config's dropout replaces the pre-trained one.
    assert source.config_values["hidden_dropout"] == 0.0
    assert source.config_values["normalize_waveform"] is (layout == "stable")


def test_fairseq_wav2vec2_options_not_implemented_are_named(fairseq_files):
    _, files = fairseq_files
    with pytest.raises(CheckpointFormatError) as err:
        read_checkpoint(files["unsupported"])
    assert "quantize_input=True" in err.value.message
    assert "pos_conv_depth=5" in err.value.message


@pytest.mark.parametrize("layout", ["group", "stable"])
def test_wavlm_release_files(layout, tmp_path):
    model = hf_model("wavlm", layout=layout, seed=11)
    path = write_wavlm_release(tmp_path / "WavLM.pt", model, normalize=layout == "stable")
    source = _source(path)
    assert source.naming.family == "wavlm" and source.source_format == "wavlm_release"
    _assert_same(source.encoder, _numpy(model.state_dict()))
    expected = _expected_values(model.config)
    expected.update(
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.1,
        normalize_waveform=layout == "stable",
    )
    expected.pop("layer_norm_eps")
    assert _listify(source.config_values) == expected


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"gru_rel_pos": False}, r"gru_rel_pos=False \(supported: True\)"),
        ({"relative_position_embedding": None}, "relative_position_embedding is not set"),
        ({"activation_fn": "relu"}, r"activation_fn='relu'"),
        ({"_name": "hubert"}, "names a 'hubert' model, not WavLM"),
    ],
)
def test_wavlm_release_variants_not_implemented_are_refused(changes, needle, tmp_path):
    model = hf_model("wavlm", seed=11)
    path = write_wavlm_release(tmp_path / "WavLM.pt", model, normalize=False, **changes)
    if changes.get("relative_position_embedding", 1) is None:
        obj = torch.load(path, weights_only=True)
        del obj["cfg"]["relative_position_embedding"]
        torch.save(obj, path)
    with pytest.raises(CheckpointFormatError, match=needle) as err:
        read_checkpoint(path)
    assert "\n" not in err.value.message


def test_bare_state_dicts_are_told_apart_by_their_weights(tmp_path):
    for family, expected in (("wavlm", "wavlm"), ("data2vec-audio", "data2vec_audio")):
        torch.save(hf_model(family).state_dict(), tmp_path / f"{family}.bin")
        assert _source(tmp_path / f"{family}.bin").naming.family == expected
