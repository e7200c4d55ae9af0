"""Training steps and loop: learning, data parallelism, resume, NaN guard, early stopping."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax.models import get_preset
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.tasks import HubertForPretraining, HubertForRegression
from papt_jax.train import finetune, pretrain, sharding
from papt_jax.train.checkpoint import Checkpoints
from papt_jax.train.logging import MetricWriter
from papt_jax.train.loop import LoopConfig, NonFiniteLossError, run_loop
from papt_jax.train.state import TrainState, make_optimizer

SAMPLES = 8_000  # 0.5 s -> 24 frames
NUM_CLASSES = 4
FREQS = (200.0, 500.0, 1100.0, 2300.0)


class ListIterator:
    """Endless iterator over fixed batches with a saveable position."""

    def __init__(self, batches):
        self.batches, self.position = batches, 0

    def __next__(self):
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])


def tone_batch(rs: np.random.RandomState, batch_size: int, num_speakers: int = 4):
    """Utterances of one tone each; every frame's label is the tone's class.

    Masked frames can only be predicted from their unmasked context, which holds the
    same tone, so a working model learns this quickly and chance is 1/4.
    """
    classes = rs.randint(0, NUM_CLASSES, batch_size)
    t = np.arange(SAMPLES) / 16_000
    phase = rs.uniform(0, 2 * np.pi, (batch_size, 1))
    freqs = np.asarray(FREQS)[classes][:, None]
    audio = 0.5 * np.sin(2 * np.pi * freqs * t + phase) + 0.05 * rs.randn(batch_size, SAMPLES)
    mask = np.ones((batch_size, SAMPLES), bool)
    lengths = rs.randint(SAMPLES // 2, SAMPLES + 1, batch_size)
    mask &= np.arange(SAMPLES)[None] < lengths[:, None]
    frames = get_preset("tiny").num_frames(SAMPLES)
    targets = np.repeat(classes[:, None], frames, axis=1).astype(np.int32)
    valid_frames = (lengths - 400) // 320 + 1
    targets[np.arange(frames)[None] >= valid_frames[:, None]] = -1
    return {
        "audio": np.where(mask, audio, 0).astype(np.float32),
        "audio_mask": mask,
        "speaker": rs.randint(0, num_speakers, batch_size).astype(np.int32),
        "arousal": (1 + 2 * classes + rs.rand(batch_size)).astype(np.float32),
        "valence": rs.uniform(1, 7, batch_size).astype(np.float32),
        "example_mask": np.ones(batch_size, bool),
        "targets": targets,
    }


LOSS_CFG = pretrain.PretrainLossConfig(mask_prob=0.5, features_pen_weight=0.0)


@functools.cache
def pretrain_setup(num_devices: int):
    """Model, initial host state, jitted steps and mesh, built once per device count.

    Every test reuses the same jitted functions, so each shape compiles once.
    """
    cfg = get_preset("tiny", num_speakers=4, speaker_fusion="last")
    model = HubertForPretraining(cfg, PretrainHeadConfig(final_dim=16, num_label_rows=NUM_CLASSES))
    params = jax.device_get(pretrain.init_params(model, jax.random.PRNGKey(0)))
    tx = make_optimizer(2e-3, 60, warmup_fraction=0.1, clip_norm=10.0)
    state = TrainState.create(apply_fn=None, params=params, tx=tx)
    mesh = sharding.make_mesh(num_devices)
    train_step = pretrain.make_train_step(model, LOSS_CFG, mesh)
    eval_step = pretrain.make_eval_step(model, LOSS_CFG, mesh)
    return model, jax.device_get(state), train_step, eval_step, mesh


def test_pretraining_learns_masked_frames():
    rs = np.random.RandomState(0)
    batches = [tone_batch(rs, 8) for _ in range(4)]
    _, state, step, eval_step, mesh = pretrain_setup(1)
    state = sharding.replicate(state, mesh)
    before = pretrain.evaluate_loss(eval_step, state.params, batches, mesh)
    rng = jax.random.PRNGKey(1)
    for i in range(60):
        state, metrics = step(state, sharding.shard_batch(batches[i % 4], mesh), rng)
    after = pretrain.evaluate_loss(eval_step, state.params, batches, mesh)
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert after["accuracy"] > 0.8 > 1.0 / NUM_CLASSES + 0.3, after
    assert float(metrics["finite"]) == 1.0


def test_one_and_eight_devices_take_the_same_step():
    assert jax.device_count() >= 8, "tests/conftest.py should emulate 8 CPU devices"
    batch = tone_batch(np.random.RandomState(3), 8)
    results = []
    for n in (1, 8):
        _, state, step, _, mesh = pretrain_setup(n)
        state = sharding.replicate(state, mesh)
        for _ in range(2):
            state, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(5))
        results.append((jax.device_get(state.params), float(metrics["loss"])))
    (p1, loss1), (p8, loss8) = results
    assert loss1 == pytest.approx(loss8, rel=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    mesh = sharding.make_mesh(8)
    with pytest.raises(ValueError, match="not divisible"):
        sharding.shard_batch(tone_batch(np.random.RandomState(0), 6), mesh)


def _run(
    tmp_path,
    batches,
    total,
    stop_after=None,
    state=None,
    evaluate=None,
    patience=None,
    mode="min",
    metric="loss",
):
    _, fresh, step, eval_step, mesh = pretrain_setup(2)
    state = sharding.replicate(state if state is not None else fresh, mesh)
    if evaluate is None:
        evaluate = lambda s: pretrain.evaluate_loss(eval_step, s.params, batches[:1], mesh)  # noqa: E731
    checkpoints = Checkpoints(str(tmp_path / "ckpt"))
    writer = MetricWriter(str(tmp_path / "logs"))
    try:
        return run_loop(
            state=state,
            train_step=step,
            evaluate=evaluate,
            train_iter=ListIterator(batches),
            mesh=mesh,
            rng=jax.random.PRNGKey(7),
            checkpoints=checkpoints,
            writer=writer,
            config=LoopConfig(
                total_steps=total,
                eval_every=3,
                log_every=2,
                stop_after_steps=stop_after,
                patience=patience,
                best_mode=mode,
                best_metric=metric,
            ),
        ), checkpoints
    finally:
        writer.close()
        checkpoints.close()


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    rs = np.random.RandomState(1)
    batches = [tone_batch(rs, 4) for _ in range(5)]
    full, _ = _run(tmp_path / "full", batches, total=8)
    first, _ = _run(tmp_path / "resumed", batches, total=8, stop_after=5)
    assert not first.finished and first.step == 5
    resumed, _ = _run(tmp_path / "resumed", batches, total=8)
    assert resumed.finished and resumed.step == 8
    for a, b in zip(
        jax.tree.leaves(jax.device_get(full.state.params)),
        jax.tree.leaves(jax.device_get(resumed.state.params)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Logs were written: TensorBoard events and JSON lines.
    assert list((tmp_path / "full" / "logs").glob("events.*"))
    assert (tmp_path / "full" / "logs" / "metrics.jsonl").read_text().count("train/loss") >= 4


def test_nan_guard_stops_and_keeps_a_restorable_checkpoint(tmp_path):
    rs = np.random.RandomState(2)
    batches = [tone_batch(rs, 4) for _ in range(4)]
    bad = dict(batches[0])
    bad["audio"] = bad["audio"].copy()
    bad["audio"][0, 100] = np.nan
    stream = batches[:3] + [bad] + batches
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        _run(tmp_path, stream, total=8)
    _, fresh, _, _, mesh = pretrain_setup(2)
    fresh = sharding.replicate(fresh, mesh)
    checkpoints = Checkpoints(str(tmp_path / "ckpt"))
    state, meta = checkpoints.restore_latest(fresh)
    checkpoints.close()
    assert meta["step"] == 3  # the evaluation before the bad batch
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_early_stopping_keeps_the_best_evaluation(tmp_path):
    rs = np.random.RandomState(4)
    batches = [tone_batch(rs, 4) for _ in range(2)]
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.9])
    result, _ = _run(
        tmp_path,
        batches,
        total=30,
        patience=2,
        mode="max",
        metric="ccc",
        evaluate=lambda s: {"ccc": next(scores)},
    )
    assert result.stopped_early and result.step == 12
    assert result.best == 0.5
    checkpoints = Checkpoints(str(tmp_path / "ckpt"))
    assert checkpoints.best_meta()["step"] == 6
    checkpoints.close()


def test_finetune_step_lowers_ccc_loss_and_predicts():
    rs = np.random.RandomState(5)
    batches = [tone_batch(rs, 8) for _ in range(3)]
    mesh = sharding.make_mesh(1)
    cfg = get_preset("tiny")
    model = HubertForRegression(cfg, head_dropout=0.0, freeze_feature_extractor=True)
    variables = finetune.init_variables(model, jax.random.PRNGKey(0))
    tx = make_optimizer(
        3e-3,
        60,
        schedule="constant",
        params=variables["params"],
        frozen_prefixes=("hubert/feature_extractor",),
    )
    state = TrainState.create(
        apply_fn=None, params=variables["params"], tx=tx, batch_stats=variables["batch_stats"]
    )
    frozen_before = jax.device_get(state.params["hubert"]["feature_extractor"])
    state = sharding.replicate(state, mesh)
    scaling = finetune.LabelScaling("unit")
    step = finetune.make_train_step(model, "arousal", scaling, mesh)
    losses = []
    for i in range(60):
        state, metrics = step(
            state, sharding.shard_batch(batches[i % 3], mesh), jax.random.PRNGKey(0)
        )
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.2, losses
    frozen_after = jax.device_get(state.params["hubert"]["feature_extractor"])
    for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen_after), strict=True):
        np.testing.assert_array_equal(a, b)
    predict_step = finetune.make_predict_step(model, scaling, mesh)
    for b in batches:
        b["key"] = np.asarray([f"u{i}" for i in range(len(b["audio"]))], dtype=object)
    out = finetune.predict(
        predict_step, {"params": state.params, "batch_stats": state.batch_stats}, batches, mesh
    )
    assert out["prediction"].shape == (24,) and out["pooled"].shape == (24, cfg.hidden_size)
    # Predictions come back on the 1..7 label scale: 1 + 6 * raw model output.
    raw, _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        batches[0]["audio"],
        batches[0]["audio_mask"],
        train=False,
    )
    np.testing.assert_allclose(out["prediction"][:8], 1.0 + 6.0 * np.asarray(raw), rtol=1e-5)


def test_masked_prediction_loss_ignores_unlabelled_and_unmasked_frames():
    from papt_jax.losses import masked_prediction_loss

    logits = jnp.zeros((1, 4, 3)).at[0, 0, 1].set(10.0)
    targets = jnp.asarray([[1, 2, -1, 0]])
    mask_indices = jnp.asarray([[True, False, True, False]])
    frame_mask = jnp.ones((1, 4), bool)
    loss, stats = masked_prediction_loss(logits, targets, mask_indices, frame_mask)
    # Only frame 0 is masked and labelled; it is predicted confidently and correctly.
    assert float(stats["count"]) == 1.0 and float(stats["correct"]) == 1.0
    assert float(loss) < 1e-3


@pytest.mark.parametrize("mode, centre", [("none", 4.0), ("unit", 0.5)])
def test_regression_head_starts_at_the_centre_of_the_label_scale(mode, centre):
    model = HubertForRegression(get_preset("tiny"), head_dropout=0.0)
    head = finetune.init_variables(model, jax.random.PRNGKey(0))["params"]["head"]
    centred = finetune.centre_output_bias(head, finetune.LabelScaling(mode))
    np.testing.assert_array_equal(centred["output"]["bias"], [centre])
    # Everything else is untouched, and the input tree is not modified in place.
    assert float(head["output"]["bias"][0]) == 0.0
    np.testing.assert_array_equal(centred["output"]["kernel"], head["output"]["kernel"])
    np.testing.assert_array_equal(centred["dense_0"]["kernel"], head["dense_0"]["kernel"])
