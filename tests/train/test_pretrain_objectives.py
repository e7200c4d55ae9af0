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


def test_wavlm_step_with_mixing_off_is_the_masked_prediction_step(wavlm):
    batch = _batch(0)
    plain, plain_metrics = _steps(wavlm, _masked(None), batch)
    off, off_metrics = _steps(wavlm, _masked(MixingConfig(prob=0.0)), batch)
    assert plain_metrics["loss"] == off_metrics["loss"]
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(off), strict=True):
        np.testing.assert_array_equal(a, b)


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
