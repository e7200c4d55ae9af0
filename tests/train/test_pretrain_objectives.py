"""The pre-training step with each objective: WavLM's mixing, the contrastive metrics,
the collapsed-codebook warning, and the choice of objective per family."""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np
import pytest

from papt_jax.experiment import objectives
from papt_jax.models import get_preset
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.quantizer import QuantizerHeadConfig
from papt_jax.train import pretrain, pretrain_objectives, sharding
from papt_jax.train.state import TrainState, make_optimizer
from papt_jax.utterance_mixing import MixingConfig, mix_utterances

SAMPLES = 8_000
CLUSTERS = 5
TX = make_optimizer(1e-3, 10, 0.0)  # one object: the jitted steps are reused across tests


def _batch(seed: int, rows: int = 4):
    rs = np.random.RandomState(seed)
    lengths = rs.randint(SAMPLES // 2, SAMPLES + 1, rows)
    mask = np.arange(SAMPLES)[None] < lengths[:, None]
    frames = get_preset("tiny").num_frames(SAMPLES)
    targets = rs.randint(0, CLUSTERS, (rows, frames)).astype(np.int32)
    targets[np.arange(frames)[None] >= ((lengths - 400) // 320 + 1)[:, None]] = -1
    return {
        "audio": np.where(mask, rs.randn(rows, SAMPLES), 0).astype(np.float32),
        "audio_mask": mask,
        "speaker": np.zeros(rows, np.int32),
        "example_mask": np.ones(rows, bool),
        "targets": targets,
    }


@functools.cache
def _jitted_step(model, loss_cfg, devices):
    """One compiled step per model and objective, shared by the tests."""
    mesh = sharding.make_mesh(devices)
    return mesh, pretrain.make_train_step(model, loss_cfg, mesh)


def _steps(model, loss_cfg, batch, steps=2, seed=0):
    """`steps` training steps from a fixed init; returns the params and the last metrics."""
    params = pretrain.init_params(model, jax.random.PRNGKey(seed))
    mesh, step = _jitted_step(model, loss_cfg, 2)
    state = sharding.replicate(TrainState.create(apply_fn=None, params=params, tx=TX), mesh)
    for _ in range(steps):
        state, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(3))
    return jax.device_get(state.params), jax.device_get(metrics)


def _masked(mixing):
    return pretrain.PretrainLossConfig(
        mask_prob=0.5, mask_length=4, features_pen_weight=1.0, mixing=mixing
    )


@pytest.fixture(scope="module")
def wavlm():
    config = pretrain.PretrainModelConfig(
        encoder_config=get_preset("wavlm-tiny"),
        head_config=PretrainHeadConfig(final_dim=8, num_label_rows=CLUSTERS),
        loss=_masked(None),
    )
    return pretrain.build_model(config)


@pytest.mark.slow
def test_wavlm_step_with_mixing_off_is_the_masked_prediction_step(wavlm):
    batch = _batch(0)
    plain, plain_metrics = _steps(wavlm, _masked(None), batch)
    off, off_metrics = _steps(wavlm, _masked(MixingConfig(prob=0.0)), batch)
    assert plain_metrics["loss"] == off_metrics["loss"]
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(off), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_wavlm_step_with_mixing_trains_on_mixed_audio_and_the_primarys_targets(wavlm):
    batch = _batch(1)
    mixing = MixingConfig(prob=1.0)
    mixed, mixed_metrics = _steps(wavlm, _masked(mixing), batch, steps=1)
    plain, plain_metrics = _steps(wavlm, _masked(None), batch, steps=1)
    assert mixed_metrics["loss"] != plain_metrics["loss"]  # the inputs changed
    # The same step without mixing, fed the audio the step mixed (same key: the step's
    # rng 3, step 0, the mixing stream) and the unchanged targets, lands on the same
    # parameters: the step mixes the input and nothing else.
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.PRNGKey(3), pretrain_objectives._MIXING_STREAM), 0
    )
    audio = np.asarray(mix_utterances(key, batch["audio"], batch["audio_mask"], mixing))
    assert not np.array_equal(audio, batch["audio"])
    by_hand, by_hand_metrics = _steps(wavlm, _masked(None), {**batch, "audio": audio}, steps=1)
    assert by_hand_metrics["loss"] == pytest.approx(float(mixed_metrics["loss"]), rel=1e-6)
    for a, b in zip(jax.tree.leaves(by_hand), jax.tree.leaves(mixed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_wavlm_step_with_a_noise_bank_mixes_noise_into_the_input(wavlm):
    batch = _batch(5)
    rs = np.random.RandomState(7)
    noise = np.zeros((3, SAMPLES), np.float32)
    noise_mask = np.zeros_like(noise, bool)
    for row, length in enumerate((SAMPLES, 3000, 5000)):
        noise[row, :length] = rs.uniform(-0.5, 0.5, length)
        noise_mask[row, :length] = True
    mixing = MixingConfig(prob=1.0, noise_prob=1.0)
    params = pretrain.init_params(wavlm, jax.random.PRNGKey(0))
    mesh = sharding.make_mesh(2)
    step = pretrain.make_train_step(wavlm, _masked(mixing), mesh, noise=(noise, noise_mask))
    state = sharding.replicate(TrainState.create(apply_fn=None, params=params, tx=TX), mesh)
    state, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(3))
    # By hand: the audio mixed with that bank by the step's key, through the plain step.
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.PRNGKey(3), pretrain_objectives._MIXING_STREAM), 0
    )
    audio = np.asarray(
        mix_utterances(key, batch["audio"], batch["audio_mask"], mixing, noise, noise_mask)
    )
    speech_only = np.asarray(
        mix_utterances(key, batch["audio"], batch["audio_mask"], MixingConfig(prob=1.0))
    )
    assert not np.array_equal(audio, speech_only)  # the bank was used
    by_hand, by_hand_metrics = _steps(wavlm, _masked(None), {**batch, "audio": audio}, steps=1)
    assert by_hand_metrics["loss"] == pytest.approx(float(metrics["loss"]), rel=1e-6)
    # Adam's first update is about 1e-3 * sign(g): 1e-5 is 1 % of it (float rounding of
    # the two programs reaches 1.6e-6 on one parameter of several thousand).
    for a, b in zip(jax.tree.leaves(by_hand), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5)


def _contrastive_model(encoder="wav2vec2-tiny"):
    loss = pretrain.PretrainLossConfig(
        mask_prob=0.5,
        mask_length=4,
        features_pen_weight=0.0,
        objective="contrastive",
        contrastive=pretrain.ContrastiveSettings(
            num_negatives=10, diversity_weight=0.1, temperature=(2.0, 0.5, 0.9), step_offset=3
        ),
    )
    head = QuantizerHeadConfig(
        num_codevector_groups=2,
        num_codevectors_per_group=8,
        codevector_dim=8,
        proj_codevector_dim=8,
    )
    config = pretrain.PretrainModelConfig(
        encoder_config=get_preset(encoder), head_config=head, loss=loss
    )
    return pretrain.build_model(config), loss


@pytest.mark.slow
def test_contrastive_step_logs_its_parts_and_collapse_is_a_warning(caplog):
    model, loss = _contrastive_model()
    params, metrics = _steps(model, loss, _batch(2), steps=2)
    for key in ("contrastive", "diversity", "prob_perplexity", "code_perplexity", "temperature"):
        assert np.isfinite(metrics[key]), key
    # Step 1 (the second) with 3 updates already made: 2 * 0.9 ** 4.
    assert float(metrics["temperature"]) == pytest.approx(2.0 * 0.9**4, rel=1e-6)
    assert 1.0 <= float(metrics["code_perplexity"]) <= 16.0
    assert float(metrics["diversity"]) == pytest.approx(
        (16 - float(metrics["prob_perplexity"])) / 16, rel=1e-5
    )
    watch = pretrain_objectives.CodebookWatch(groups=2, description="PAPT")
    with caplog.at_level(logging.WARNING):
        watch(10, {"code_perplexity": 9.0})
        assert not caplog.records
        watch(20, {"code_perplexity": 2.2})  # 1.1 entries per group
        watch(30, {"code_perplexity": 2.0})  # still collapsed: no second warning
    assert len(caplog.records) == 1
    assert "codebook has collapsed" in caplog.records[0].getMessage()
    assert "step 20" in caplog.records[0].getMessage()


@pytest.mark.slow
def test_a_collapsed_codebook_gives_a_code_perplexity_of_one_per_group():
    # One entry of each group scores far above the others on every frame: the step's
    # logged code perplexity is 1 per group, which the watch turns into the warning.
    model, loss = _contrastive_model()
    batch = _batch(4)
    params = pretrain.init_params(model, jax.random.PRNGKey(0))
    bias = np.zeros(16, np.float32)
    bias[[0, 8]] = 1e4
    params["head"]["quantizer"]["weight_proj"]["bias"] = bias
    mesh = sharding.make_mesh(1)
    tx = make_optimizer(1e-3, 10, 0.0)
    state = sharding.replicate(TrainState.create(apply_fn=None, params=params, tx=tx), mesh)
    step = pretrain.make_train_step(model, loss, mesh)
    _, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(0))
    assert float(metrics["code_perplexity"]) == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize(
    "spec, family, objective",
    [
        ("preset:wav2vec2-tiny", "wav2vec2", "contrastive"),
        ("preset:wavlm-small", "wavlm", "masked_prediction"),
        ("preset:data2vec-audio-base", "data2vec_audio", "masked_prediction"),
        ("preset:large", "hubert", "masked_prediction"),
        ("bootstrap", "wav2vec2", "contrastive"),
    ],
)
def test_auto_objective_is_the_familys_own(spec, family, objective):
    values = {"pretrain.objective": "auto", "model.init": spec, "bootstrap.preset": "wav2vec2-tiny"}
    assert objectives.spec_family(spec, values) == family
    assert objectives.planned_objective(values) == objective
    assert objectives.labels_needed(values) == (objective != "contrastive")
    assert objectives.planned_objective({**values, "pretrain.objective": "masked_prediction"}) == (
        "masked_prediction"
    )
    assert objectives.mixing_on("auto", family, objective) == (family == "wavlm")


def test_preset_families_agree_with_the_presets():
    from papt_jax.models.config import MODEL_PRESETS

    for name, config in MODEL_PRESETS.items():
        assert objectives.preset_family(name) == config.family, name
    assert set(objectives.FAMILY_OBJECTIVES.values()) == set(pretrain_objectives.OBJECTIVES)


@pytest.fixture(scope="module")
def pytorch_wav2vec2_files(tmp_path_factory):
    """A random-init transformers `Wav2Vec2ForPreTraining` as a Hugging Face folder, a
    .safetensors file and a fairseq pre-training file; a HuBERT folder; a legacy pickle."""
    import torch
    import transformers
    from fixtures.fairseq_files import write_checkpoints
    from fixtures.family_files import (
        TINY,
        fairseq_wav2vec2_names,
        hf_model,
        wav2vec2_model_cfg,
        wav2vec2_task_cfg,
    )
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("pytorch_files")
    model = hf_model("wav2vec2", "ForPreTraining")
    model.save_pretrained(folder / "hf_wav2vec2")
    transformers.HubertModel(transformers.HubertConfig(**TINY)).save_pretrained(
        folder / "hf_hubert"
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "wav2vec2.safetensors")
    torch.save(state, folder / "legacy.bin", _use_new_zipfile_serialization=False)
    cfg = {"model": wav2vec2_model_cfg(model.config), "task": wav2vec2_task_cfg(False)}
    fairseq_state = fairseq_wav2vec2_names(model.state_dict(), model.config.feat_extract_norm)
    (fairseq_file,) = write_checkpoints(
        [dict(out=folder / "w2v.pt", model_state=fairseq_state, cfg=cfg, task_state_key=None)]
    )
    return {
        "hf": folder / "hf_wav2vec2",
        "hf_weights": folder / "hf_wav2vec2" / "model.safetensors",
        "safetensors": folder / "wav2vec2.safetensors",
        "fairseq": fairseq_file,
        "hubert": folder / "hf_hubert",
        "legacy": folder / "legacy.bin",
    }


@pytest.mark.parametrize("name", ["hf", "hf_weights", "safetensors", "fairseq"])
def test_a_pytorch_wav2vec2_checkpoint_plans_no_pseudo_labels(pytorch_wav2vec2_files, name):
    """Before: a `pytorch:` checkpoint's family was known only once converted, so its plan
    assumed pseudo-labels (and asked for a teacher) even for a wav2vec2."""
    from papt_jax.experiment import settings, stages
    from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config

    config = apply_embedded_corpus(base_config(), "smoke")
    config.model.init = f"pytorch:{pytorch_wav2vec2_files[name]}"
    config.pseudo_labels.teacher = ""  # a contrastive run needs none
    settings.validate(config)  # before: "--config.pseudo_labels.teacher is not set"
    values = settings.flatten(config)
    assert objectives.spec_family(config.model.init, values) == "wav2vec2"
    assert objectives.planned_objective(values) == "contrastive"
    assert not objectives.labels_needed(values)
    assert "pseudo_labels" not in stages.STAGES["pretrain"].needs(config)
    assert "bootstrap" not in stages.STAGES["pretrain"].needs(config)


def test_a_pytorch_checkpoint_whose_header_does_not_tell_is_assumed_to_need_labels(
    pytorch_wav2vec2_files,
):
    values = {"pretrain.objective": "auto", "bootstrap.preset": "tiny"}
    hubert = f"pytorch:{pytorch_wav2vec2_files['hubert']}"
    assert objectives.planned_objective({**values, "model.init": hubert}) == "masked_prediction"
    # A legacy-format pickle cannot be read without loading its tensors: unknown.
    legacy = f"pytorch:{pytorch_wav2vec2_files['legacy']}"
    assert objectives.spec_family(legacy, values) is None
    assert objectives.labels_needed({**values, "model.init": legacy})


@pytest.mark.slow
def test_quantizer_dropout_drops_the_quantizers_input_and_is_identity_at_zero():
    import dataclasses

    from papt_jax.models.tasks import EncoderForContrastive
    from papt_jax.train import contrastive_objective

    base, loss_cfg = _contrastive_model()
    models = {
        rate: EncoderForContrastive(
            base.config, dataclasses.replace(base.head_config, feat_quantizer_dropout=rate)
        )
        for rate in (None, 0.0, 0.5)
    }
    params = pretrain.init_params(models[None], jax.random.PRNGKey(0))
    batch = jax.tree.map(np.asarray, _batch(6))
    mask_key, dropout_key = jax.random.split(jax.random.PRNGKey(1))

    def loss(rate, deterministic=False):
        value, stats = contrastive_objective.batch_loss(
            models[rate], loss_cfg, params, batch, mask_key, dropout_key, 0, deterministic
        )
        return float(value), float(stats["prob_perplexity"])

    assert loss(0.0) == loss(None)  # rate 0: no dropout at all
    assert loss(0.5)[0] != loss(0.0)[0] and loss(0.5)[1] != loss(0.0)[1]
    assert loss(0.5, True) == loss(0.0, True)  # evaluation never drops

    # Where fairseq applies it: the quantizer's input, not the Transformer's.
    drawn = contrastive_objective.draws(models[0.5], loss_cfg, batch, mask_key, dropout_key)
    key = jax.random.PRNGKey(4)
    outputs = {}
    for rate in (0.0, 0.5):
        outputs[rate] = models[rate].apply(
            {"params": params},
            batch["audio"],
            batch["audio_mask"],
            None,
            drawn["mask_indices"],
            deterministic=False,
            gumbel_noise=drawn["gumbel"],
            quantizer_dropout_rng=key,
            rngs={"dropout": jax.random.PRNGKey(5)},
        )
    np.testing.assert_array_equal(outputs[0.0][0], outputs[0.5][0])  # project_hid(f_p)
    assert not np.allclose(outputs[0.0][2].prob_sum, outputs[0.5][2].prob_sum)
    # The accumulated step's first pass (CNN + quantizer only) drops the same units.
    prob_sum, _ = models[0.5].apply(
        {"params": params},
        batch["audio"],
        batch["audio_mask"],
        drawn["mask_indices"],
        deterministic=False,
        quantizer_dropout_rng=key,
        method=EncoderForContrastive.code_sums,
    )
    np.testing.assert_allclose(prob_sum, outputs[0.5][2].prob_sum, rtol=1e-5, atol=1e-5)


def test_quantizer_dropout_setting_takes_the_checkpoints_own_value_by_default():
    from papt_jax.experiment.pretraining import quantizer_dropout

    assert quantizer_dropout(-1.0, 0.2) == (0.2, "checkpoint's own")
    assert quantizer_dropout(-1.0, None) == (0.0, "fairseq's default")
    assert quantizer_dropout(0.3, 0.2) == (0.3, "config")
    assert quantizer_dropout(0.0, 0.1) == (0.0, "config")
