"""Genuine-format fairseq HuBERT checkpoints: safe loading, every variant, equivalence.

The files are pickled by `fixtures.fairseq_files` in a subprocess where look-alike
`fairseq` and `omegaconf` packages exist, in the shape of fairseq's
`Trainer.save_checkpoint`; this process has neither package. Their weights are a
random transformers `HubertModel`'s, renamed to fairseq's keys by the fixture's own
table, so every converted hidden state can be compared with transformers.
"""

import importlib.util
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from fixtures.fairseq_files import write_checkpoints
from fixtures.hubert_files import (
    EVIL_PLACES,
    EVIL_WAYS,
    FINAL_DIM,
    LABELS,
    RESOLVED,
    TINY,
    VARIANTS,
    VOCAB,
)
from fixtures.hubert_files import (
    cfg as _cfg,
)
from fixtures.hubert_files import (
    encoder_state as _encoder_state,
)
from fixtures.hubert_files import (
    head_state as _head_state,
)
from fixtures.hubert_files import (
    hf_model as _hf_model,
)
from fixtures.hubert_files import (
    model_cfg as _model_cfg,
)
from fixtures.hubert_files import (
    task_cfg as _task_cfg,
)
from flax.traverse_util import flatten_dict
from transformers import HubertModel as HFModel

from papt_jax.convert import (
    CheckpointFormatError,
    ConfigInferenceError,
    UnsafePickleError,
    UnsafePickleWarning,
    load_converted,
    load_pytorch_checkpoint,
    save_converted,
)
from papt_jax.convert.safe_unpickle import (
    FairseqDictionary,
    OmegaDictConfig,
    load_pickle,
    plain,
    resolve_interpolations,
)
from papt_jax.errors import UserError
from papt_jax.models import HubertModel


def _finetuned_cfg(variant: str) -> dict:
    """fairseq's HubertCtcConfig around the pre-trained encoder's whole config."""
    model = {
        "_name": "hubert_ctc",
        "w2v_path": "/checkpoints/hubert_large_ll60k.pt",
        "no_pretrained_weights": False,
        "dropout_input": 0.0,
        "final_dropout": 0.0,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.1,
        "apply_mask": True,
        "mask_prob": 0.5,
        "normalize": "${task.normalize}",
        "data": "${task.data}",
        "w2v_args": _cfg(_model_cfg(variant), _task_cfg(variant)),
    }
    task = _task_cfg(variant, fine_tuning=True, labels=["ltr"])
    return _cfg(model, task)


def _finetuned_args(variant: str) -> dict:
    """The same as an old flat Namespace whose w2v_args is a Namespace too."""
    inner = {**_model_cfg(variant), **_task_cfg(variant), "arch": "hubert"}
    inner.pop("_name")
    return {
        "arch": "hubert_ctc",
        "task": "hubert_pretraining",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.1,
        "normalize": variant == "large",
        "w2v_args": inner,
    }


def _finetuned_state(hf: HFModel, variant: str) -> dict:
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in _encoder_state(hf, variant).items()}
    # fine-tuning keeps the (unused) label embeddings and adds the CTC output layer.
    state["w2v_encoder.w2v_model.label_embs_concat"] = _head_state()["label_embs_concat"]
    generator = torch.Generator().manual_seed(9)
    state["w2v_encoder.proj.weight"] = torch.randn(VOCAB, TINY["hidden_size"], generator=generator)
    state["w2v_encoder.proj.bias"] = torch.randn(VOCAB, generator=generator)
    return state


@pytest.fixture(scope="module")
def models():
    return {variant: _hf_model(variant, seed) for seed, variant in enumerate(VARIANTS)}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    """name -> genuine-format file, all pickled by one subprocess."""
    folder = tmp_path_factory.mktemp("fairseq_files")
    base, large = models["base"], models["large"]
    pretrain = {v: {**_encoder_state(models[v], v), **_head_state()} for v in VARIANTS}
    tiny = {"mask_emb": torch.zeros(4)}
    flat_base = {**_model_cfg("base"), **_task_cfg("base"), "arch": "hubert"}
    flat_base.pop("_name")
    jobs = {
        "base_dictconfig": dict(
            model_state=pretrain["base"], cfg=_cfg(_model_cfg("base"), _task_cfg("base"))
        ),
        "large_dictconfig": dict(
            model_state=pretrain["large"], cfg=_cfg(_model_cfg("large"), _task_cfg("large"))
        ),
        "large_dict": dict(
            model_state=pretrain["large"],
            cfg=_cfg(_model_cfg("large"), _task_cfg("large")),
            cfg_style="dict",
        ),
        "base_namespace": dict(model_state=pretrain["base"], args=flat_base),
        "large_finetuned_dictconfig": dict(
            model_state=_finetuned_state(large, "large"),
            cfg=_finetuned_cfg("large"),
            task_state_key="target_dictionary",
        ),
        "large_finetuned_dict": dict(
            model_state=_finetuned_state(large, "large"),
            cfg=_finetuned_cfg("large"),
            cfg_style="dict",
            task_state_key="target_dictionary",
        ),
        "base_finetuned_namespace": dict(
            model_state=_finetuned_state(base, "base"),
            args=_finetuned_args("base"),
            task_state_key="target_dictionary",
        ),
        "two_label_sets": dict(
            model_state=pretrain["base"],
            cfg=_cfg(_model_cfg("base"), _task_cfg("base", labels=["km", "phn"])),
        ),
        "untied_two_projections": dict(
            model_state={**pretrain["large"], **_head_state(proj_rows=2 * FINAL_DIM)},
            cfg=_cfg(_model_cfg("large"), _task_cfg("large")),
        ),
        "unknown_extractor": dict(
            model_state=pretrain["base"],
            cfg=_cfg(_model_cfg("base", extractor_mode="conv_only"), _task_cfg("base")),
        ),
        "data2vec": dict(
            model_state=pretrain["base"],
            cfg=_cfg(_model_cfg("base", _name="data2vec_audio"), _task_cfg("base")),
        ),
        "base_legacy_format": dict(
            model_state=pretrain["base"],
            cfg=_cfg(_model_cfg("base"), _task_cfg("base")),
            legacy_format=True,
        ),
        "evil_legacy_format": dict(
            model_state=tiny,
            cfg=_cfg(_model_cfg("base"), _task_cfg("base")),
            evil={"how": "os.system", "target": str(folder / "pwned_legacy"), "where": "config"},
            legacy_format=True,
        ),
        "unknown_class": dict(
            model_state=pretrain["base"],
            cfg=_cfg(_model_cfg("base"), _task_cfg("base")),
            unknown_class=True,
        ),
    }
    for how in EVIL_WAYS:
        for where in EVIL_PLACES:
            target = folder / f"pwned_{how}_{where}"
            jobs[f"evil_{how}_{where}"] = dict(
                model_state=tiny,
                cfg=_cfg(_model_cfg("base"), _task_cfg("base")),
                evil={"how": how, "target": str(target), "where": where},
            )
    for name, job in jobs.items():
        job["out"] = folder / f"{name}.pt"
        job.setdefault("label_symbols", LABELS)
    write_checkpoints(list(jobs.values()))
    return {name: job["out"] for name, job in jobs.items()}


def _flat(params) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}


def _hidden_states(config, params, audio: np.ndarray):
    # One compiled forward: far cheaper than op-by-op dispatch.
    apply = jax.jit(HubertModel(config).apply, static_argnames=("output_hidden_states",))
    out = apply({"params": params}, audio, output_hidden_states=True)
    return [np.asarray(h) for h in out.hidden_states]


def _reference_hidden_states(hf: HFModel, audio: np.ndarray, normalize: bool):
    if normalize:  # What the HF feature extractor does for large models.
        mean = audio.mean(1, keepdims=True)
        audio = (audio - mean) / np.sqrt(audio.var(1, keepdims=True) + 1e-7)
    with torch.no_grad():
        out = hf(torch.tensor(audio), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


def test_this_process_has_neither_fairseq_nor_omegaconf():
    for name in ("fairseq", "omegaconf"):
        assert importlib.util.find_spec(name) is None, f"{name} is importable here"
        assert name not in sys.modules


@pytest.mark.parametrize("name", ["base_dictconfig", "base_legacy_format"])
def test_genuine_file_loads_as_inert_plain_data(files, name):
    obj = load_pickle(files[name])
    assert set(obj) == {
        "args",
        "cfg",
        "model",
        "criterion",
        "optimizer_history",
        "task_state",
        "extra_state",
        "last_optimizer_state",
    }
    assert type(obj["cfg"]) is OmegaDictConfig
    cfg = plain(obj["cfg"])
    # Nodes, nested DictConfigs and ListConfigs rebuilt into exactly the saved values.
    assert cfg == _cfg(_model_cfg("base"), _task_cfg("base"))
    assert resolve_interpolations(cfg, cfg)["model"]["label_rate"] == 50.0
    (dictionary,) = obj["task_state"]["dictionaries"]
    assert type(dictionary) is FairseqDictionary
    assert dictionary.symbols == ["<s>", "<pad>", "</s>", "<unk>", *LABELS]
    assert dictionary.nspecial == 4
    meters = dict((m[0], m[2]) for m in obj["extra_state"]["metrics"]["train"])
    assert meters["wps"]["init"] == 12.5 and type(meters["wps"]["init"]) is float
    assert meters["gnorm"]["val"] == 1.25 and obj["extra_state"]["best"] == 2.25
    assert obj["optimizer_history"][0]["num_updates"] == 400000
    assert "fairseq" not in sys.modules and "omegaconf" not in sys.modules


def test_legacy_format_malicious_file_is_refused_by_name(files):
    with pytest.raises(UnsafePickleError, match="refers to posix.system,"):
        load_pickle(files["evil_legacy_format"])
    assert not (files["evil_legacy_format"].parent / "pwned_legacy").exists()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_genuine_pretraining_checkpoint_equals_transformers(files, models, variant):
    """Every hidden state of the converted model matches transformers within 1e-4."""
    ckpt = load_pytorch_checkpoint(files[f"{variant}_dictconfig"])
    assert ckpt.source_format == "fairseq"
    config = ckpt.config
    assert config.do_stable_layer_norm == (variant == "large")
    assert config.feat_extract_norm == ("layer" if variant == "large" else "group")
    assert config.normalize_waveform == (variant == "large")
    assert config.hidden_dropout == 0.1 and config.feat_proj_dropout == 0.1
    audio = np.random.default_rng(3).standard_normal((2, 4000)).astype(np.float32)
    got = _hidden_states(config, ckpt.params, audio)
    want = _reference_hidden_states(models[variant], audio, normalize=variant == "large")
    assert len(got) == len(want) == TINY["num_hidden_layers"] + 1
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        diff = float(np.abs(a - b).max())
        assert diff <= 1e-4, f"{variant} hidden state {i} differs by {diff}"
    # The head, untied in the large config but with one label set: the tied shapes.
    head = ckpt.head_config
    assert (head.final_dim, head.num_label_rows, head.label_offset) == (FINAL_DIM, 24, 4)
    assert head.num_clusters == len(LABELS)
    want_head = _head_state()
    np.testing.assert_array_equal(
        ckpt.head_params["final_proj"]["kernel"], want_head["final_proj.weight"].numpy().T
    )
    np.testing.assert_array_equal(
        ckpt.head_params["label_embs_concat"], want_head["label_embs_concat"].numpy()
    )


def test_config_as_dict_dictconfig_or_namespace_gives_the_same_conversion(files):
    by_dictconfig = load_pytorch_checkpoint(files["large_dictconfig"])
    by_dict = load_pytorch_checkpoint(files["large_dict"])
    assert by_dict.config == by_dictconfig.config
    assert by_dict.head_config == by_dictconfig.head_config
    flat, ref = _flat(by_dict.params), _flat(by_dictconfig.params)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)
    by_namespace = load_pytorch_checkpoint(files["base_namespace"])
    base = load_pytorch_checkpoint(files["base_dictconfig"])
    assert by_namespace.config == base.config
    assert by_namespace.head_config == base.head_config


@pytest.mark.parametrize(
    "name, variant",
    [
        ("large_finetuned_dictconfig", "large"),
        ("large_finetuned_dict", "large"),
        ("base_finetuned_namespace", "base"),
    ],
)
def test_finetuned_checkpoint_converts_its_encoder(files, name, variant, caplog):
    with caplog.at_level("INFO"):
        ckpt = load_pytorch_checkpoint(files[name])
    assert ckpt.source_format == "fairseq_finetuned"
    assert ckpt.head_config is None and ckpt.head_params is None
    notes = "\n".join(ckpt.notes)
    assert "w2v_encoder.proj.weight (29x32)" in notes and "w2v_encoder.proj.bias" in notes
    assert "label_embs_concat" in notes
    assert "w2v_encoder.proj.weight" in caplog.text
    pretrained = load_pytorch_checkpoint(files[f"{variant}_dictconfig"])
    # Same encoder and architecture; the fine-tuning config's dropout rates win (the old
    # Namespace sets no dropout_input, so the encoder's own stays).
    assert ckpt.config == pretrained.config.replace(
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.1,
        feat_proj_dropout=0.0 if variant == "large" else 0.1,
    )
    flat, ref = _flat(ckpt.params), _flat(pretrained.params)
    assert sorted(flat) == sorted(ref)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)


def test_finetuned_checkpoint_equals_transformers(files, models):
    ckpt = load_pytorch_checkpoint(files["large_finetuned_dictconfig"])
    audio = np.random.default_rng(4).standard_normal((2, 4000)).astype(np.float32)
    got = _hidden_states(ckpt.config, ckpt.params, audio)
    want = _reference_hidden_states(models["large"], audio, normalize=True)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        diff = float(np.abs(a - b).max())
        assert diff <= 1e-4, f"fine-tuned hidden state {i} differs by {diff}"


def test_finetuned_without_encoder_config_needs_a_preset(files, models, tmp_path):
    cfg = _finetuned_cfg("base")
    cfg["model"]["w2v_args"] = None  # Only w2v_path: the encoder's config is not in the file.
    path = tmp_path / "no_w2v_args.pt"
    torch.save({"cfg": cfg, "args": None, "model": _finetuned_state(models["base"], "base")}, path)
    with pytest.raises(ConfigInferenceError, match="preset"):
        load_pytorch_checkpoint(path)
    ckpt = load_pytorch_checkpoint(path, preset="tiny")
    assert any("w2v_args" in note for note in ckpt.notes)
    pretrained = load_pytorch_checkpoint(files["base_dictconfig"])
    flat, ref = _flat(ckpt.params), _flat(pretrained.params)
    assert sorted(flat) == sorted(ref)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)


def test_finetuned_conversion_is_stored_with_its_notes(files, tmp_path):
    ckpt = load_pytorch_checkpoint(files["large_finetuned_dictconfig"])
    out = save_converted(ckpt, tmp_path / "ft")
    stored = json.loads((out / "conversion.json").read_text())
    assert stored["source_format"] == "fairseq_finetuned"
    assert stored["notes"] == list(ckpt.notes)
    assert load_converted(out).notes == ckpt.notes


@pytest.mark.parametrize(
    "name, needle",
    [
        ("two_label_sets", r"pre-trained on 2 label sets \(\['km', 'phn'\]\)"),
        ("untied_two_projections", r"final_proj has 32 outputs, 2 x final_dim 16"),
        ("unknown_extractor", r"extractor_mode='conv_only' \(supported: 'default', 'layer_norm'"),
        ("data2vec", r"is a fairseq 'data2vec_audio' checkpoint: only HuBERT and wav2vec2"),
    ],
)
def test_unsupported_variants_fail_with_one_line(files, name, needle):
    with pytest.raises(CheckpointFormatError, match=needle) as err:
        load_pytorch_checkpoint(files[name])
    assert isinstance(err.value, UserError)
    assert "\n" not in err.value.message


@pytest.mark.parametrize("how", EVIL_WAYS)
@pytest.mark.parametrize("where", EVIL_PLACES)
def test_malicious_pickle_runs_nothing_and_is_refused(files, how, where):
    path = files[f"evil_{how}_{where}"]
    with pytest.raises(UnsafePickleError) as err:
        load_pytorch_checkpoint(path)
    assert f"refers to {RESOLVED.get(how, how)}," in err.value.message
    assert "--allow_unsafe_pickle" in err.value.hint
    assert not (path.parent / f"pwned_{how}_{where}").exists()


def test_unknown_class_needs_the_opt_in_and_says_what_is_missing(files):
    path = files["unknown_class"]
    with pytest.raises(UnsafePickleError, match="fairseq.criterions.hubert_criterion"):
        load_pytorch_checkpoint(path)
    with pytest.warns(UnsafePickleWarning), pytest.raises(CheckpointFormatError) as err:
        load_pytorch_checkpoint(path, allow_unsafe_pickle=True)
    message = str(err.value)
    assert "'fairseq" in message and "not installed" in message
    assert "omegaconf" not in message.split("hint:")[0]


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", bytes(range(256)) * 8])
def test_a_file_that_is_no_checkpoint_is_a_format_error(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="model.pt"):
        load_pytorch_checkpoint(path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.convert", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@pytest.mark.slow
def test_cli_converts_a_genuine_file_in_a_fresh_process(files, tmp_path):
    out = tmp_path / "flax"
    result = _cli("--source", str(files["large_finetuned_dictconfig"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "source format: fairseq_finetuned" in result.stdout
    assert "note: dropped the fine-tuning task head" in result.stdout
    reference = load_pytorch_checkpoint(files["large_finetuned_dictconfig"])
    loaded = load_converted(out)
    assert loaded.config == reference.config
    flat, ref = _flat(loaded.params), _flat(reference.params)
    assert all(np.array_equal(flat[k], ref[k]) for k in ref)
    again = _cli("--source", str(files["large_dict"]), "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.startswith(f"error: output directory {out} is not empty")
    assert "--overwrite" in again.stderr


@pytest.mark.slow
def test_cli_user_errors_are_one_line_and_exit_2(files, tmp_path):
    out = str(tmp_path / "x")
    cases = {
        "missing path": (["--source", "/no/such/path", "--out", out], "no checkpoint at"),
        "refused pickle": (
            ["--source", str(files["evil_os.system_extra_state"]), "--out", out],
            "refers to posix.system",
        ),
        "unsupported": (["--source", str(files["data2vec"]), "--out", out], "'data2vec_audio'"),
    }
    for case, (args, needle) in cases.items():
        result = _cli(*args)
        assert result.returncode == 2, (case, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines[0].startswith("error: ") and needle in lines[0], (case, lines)
        assert all(line.startswith("hint: ") for line in lines[1:]), (case, lines)
        assert "Traceback" not in result.stderr
        if case == "missing path":  # The issue's own check: exactly one line.
            assert len(lines) == 1, lines
    assert not (files["evil_os.system_extra_state"].parent / "pwned_os.system_extra_state").exists()
    assert not (tmp_path / "x").exists()
