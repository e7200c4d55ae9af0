"""Config validation: every field checked up front, every problem listed in user terms."""

from __future__ import annotations

import pytest

from papt_jax.experiment import settings
from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def smoke():
    return apply_embedded_corpus(base_config(), "smoke")


def problems_of(config) -> str:
    with pytest.raises(settings.ConfigError) as err:
        settings.validate(config)
    return str(err.value)


def test_the_shipped_configs_are_valid():
    assert settings.validate(smoke()) == settings.STAGES
    assert settings.validate(apply_embedded_corpus(base_config(), "demo")) == settings.STAGES


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm", "data2vec_audio"])
@pytest.mark.parametrize("variant", ["smoke", "demo"])
def test_every_family_runs_the_embedded_corpus_with_its_own_encoder(family, variant):
    from papt_jax.models.config import get_preset

    config = apply_embedded_corpus(base_config(), variant, family=family)
    assert settings.validate(config) == settings.STAGES
    assert get_preset(config.bootstrap.preset).family == family


def test_every_config_key_has_a_rule_and_every_rule_a_key():
    keys = set(settings.flatten(base_config()))
    assert keys == set(settings.FIELDS)


def test_paper_config_without_data_lists_everything_missing():
    message = problems_of(base_config())
    assert "--config.data.corpus_dir is not set" in message
    assert "--config.model.init is not set" in message
    assert "--config.pseudo_labels.teacher is not set" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pretrain.speaker_fusion", "middle", "one of 'last', 'first', 'prefix', 'none'"),
        ("data.batch_size", 0, "an integer >= 1"),
        ("data.max_seconds", 0.001, "a finite number in [1, inf]"),
        ("model.dtype", "float8", "one of 'float32', 'bfloat16'"),
        ("finetune.label_scaling", "bogus", "one of 'none', 'unit'"),
        ("pseudo_labels.num_clusters", 1, "an integer >= 2"),
        ("evaluate.pldc_k", 0, "an integer >= 1"),
        ("num_devices", -1, "an integer >= 0"),
        ("finetune.peak_lr", -5e-5, "a finite number in (0, inf]"),
        ("finetune.peak_lr", 0.0, "a finite number in (0, inf]"),
        ("pretrain.peak_lr", float("nan"), "a finite number"),
        ("stages", "corpus,pretrian", "unknown pretrian"),
        ("finetune.dimensions", "arousal,dominance", "unknown dominance"),
        ("model.remat", "dots", "one of 'none', 'full', 'dots_saveable'"),
        ("model.scan_layers", "yes", "must be True or False"),
        ("train.accumulate_steps", 0, "an integer >= 1"),
        ("train.param_sharding", "zero3", "one of 'replicated', 'fsdp'"),
    ],
)
def test_bad_values_are_named_with_their_config_key(key, value, expected):
    config = smoke()
    section, _, field = key.rpartition(".")
    target = config[section] if section else config
    with target.ignore_type():
        target[field] = value
    message = problems_of(config)
    assert f"--config.{key}={value!r}" in message
    assert expected in message


def test_all_problems_are_listed_at_once():
    config = smoke()
    config.data.batch_size = 0
    config.model.dtype = "float8"
    config.evaluate.pldc_k = 0
    message = problems_of(config)
    for key in ("data.batch_size", "model.dtype", "evaluate.pldc_k"):
        assert f"--config.{key}" in message


def test_batch_sizes_must_divide_over_the_devices():
    config = smoke()
    config.num_devices = 8
    config.data.eval_batch_size = 12
    message = problems_of(config)
    assert "--config.data.eval_batch_size=12 is not a multiple of --config.num_devices=8" in message
    assert "data.batch_size=8" not in message


def test_training_batches_must_split_into_micro_batches_over_the_devices():
    config = smoke()
    config.num_devices = 2
    config.train.accumulate_steps = 3
    message = problems_of(config)
    assert (
        "--config.data.batch_size=8 does not split into --config.train.accumulate_steps=3 "
        "micro-batches over 2 device(s): it must be a multiple of 6"
    ) in message
    config.num_devices = 0  # all 8 emulated devices
    config.train.accumulate_steps = 2
    config.data.eval_batch_size = 16
    assert "must be a multiple of 16" in problems_of(config)
    config.data.batch_size = 32
    settings.validate(config)
    config.data.batch_seconds = 20.0  # rows are then rounded to multiples of 16
    config.data.batch_size = 1
    settings.validate(config)


def test_accumulation_is_accepted_for_the_contrastive_objective():
    # Before: refused ("implemented for masked prediction"); its update now equals one
    # batch's (tests/train/test_scale.py).
    config = smoke()
    config.num_devices = 1
    config.train.accumulate_steps = 2
    for objective in ("contrastive", "masked_prediction"):
        config.pretrain.objective = objective
        settings.validate(config)


def test_the_noise_folder_is_checked_before_any_work(tmp_path):
    import numpy as np
    import soundfile

    config = smoke()
    config.pretrain.noise_dir = str(tmp_path / "missing")
    assert "noise_dir=" in problems_of(config) and "is not a folder" in problems_of(config)
    noise = tmp_path / "noise"
    noise.mkdir()
    config.pretrain.noise_dir = str(noise)
    message = problems_of(config)
    assert f"--config.pretrain.noise_dir={str(noise)!r}: the noise folder {noise} holds no " in (
        message
    )
    assert "holds no audio file" in message and "noise_dir=''" in message
    soundfile.write(noise / "hum.wav", np.full(1600, 0.1, np.float32), 22_050)
    assert f"{noise / 'hum.wav'}: sample rate 22050 Hz" in problems_of(config)
    config.data.resample = True
    settings.validate(config)
    config.data.resample = False
    config.stages = "corpus,prepare,finetune,evaluate,report"  # no stage reads the noise
    settings.validate(config)


def test_quantizer_dropout_is_a_rate_or_minus_one():
    config = smoke()
    for good in (-1.0, -1, 0.0, 0.1, 0.5):
        config.pretrain.quantizer_dropout = good
        settings.validate(config)
    for bad in (1.0, -0.5, 2.0):
        config.pretrain.quantizer_dropout = bad
        assert "or -1 (the checkpoint's own)" in problems_of(config)


def test_remat_reads_policy_names_and_the_booleans_of_older_configs():
    config = smoke()
    for value in ("full", "dots_saveable", True, False):
        config.model.remat = value
        settings.validate(config)


def test_more_devices_than_visible_is_refused():
    config = smoke()
    config.num_devices = 4096
    assert "only" in problems_of(config)


def test_unknown_and_missing_keys_are_problems():
    config = smoke()
    config.finetune.peak_lrr = 1.0
    del config.data["num_buckets"]
    message = problems_of(config)
    assert "--config.finetune.peak_lrr is not a known setting" in message
    assert "--config.data.num_buckets is missing" in message


def test_encoder_specs_are_parsed_in_one_place(tmp_path):
    assert settings.parse_encoder_spec("bootstrap") == settings.EncoderSpec("workdir", "bootstrap")
    assert settings.parse_encoder_spec("preset:base") == settings.EncoderSpec("preset", "base")
    with pytest.raises(ValueError, match="converted:DIR"):
        settings.parse_encoder_spec("hubert_large")
    config = smoke()
    config.model.init = f"converted:{tmp_path / 'missing'}"
    assert "does not exist" in problems_of(config)
    config.model.init = "preset:huge"
    assert "no preset 'huge'" in problems_of(config)


def test_pldc_k_is_checked_against_the_training_speakers():
    config = smoke()
    config.evaluate.pldc_k = 20
    with pytest.raises(settings.ConfigError, match="training set has 12 speakers") as err:
        settings.validate_against_data(config, train_speakers=12)
    assert err.value.hint and "pldc_k=1" in err.value.hint
    config.evaluate.pldc_k = 11
    settings.validate_against_data(config, train_speakers=12)


def test_every_key_is_described_from_the_defaults_comments():
    from papt_jax.experiment import describe

    notes = describe.descriptions()
    assert set(settings.FIELDS) <= set(notes)
    assert notes["finetune.peak_lr"].startswith("paper: Adam")
    text = describe.describe(smoke())
    assert "--config.evaluate.pldc_k=3" in text
    assert "retrieved training speakers per test speaker" in text


def test_preset_names_agree_with_their_owners():
    from papt_jax.data.synthetic.presets import CORPUS_PRESETS
    from papt_jax.models.config import MODEL_PRESETS

    assert tuple(MODEL_PRESETS) == settings.MODEL_PRESET_NAMES
    from papt_jax.models.config import REMAT_POLICIES
    from papt_jax.train.sharding import PARAM_SHARDINGS

    assert REMAT_POLICIES == settings.REMAT_POLICY_NAMES
    assert PARAM_SHARDINGS == settings.PARAM_SHARDINGS
    config = smoke()
    config.data.synthetic_preset = "huge"
    assert f"one of '', {', '.join(repr(p) for p in CORPUS_PRESETS)}" in problems_of(config)


def test_the_old_config_defaults_module_still_works_and_names_the_new_one():
    import importlib
    import sys

    sys.modules.pop("papt_jax.config_defaults", None)  # the warning is given on import
    with pytest.warns(FutureWarning, match="papt_jax.experiment.config_defaults"):
        old = importlib.import_module("papt_jax.config_defaults")
    assert old.base_config is base_config
    assert old.apply_embedded_corpus is apply_embedded_corpus
