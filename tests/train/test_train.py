"""Training steps and loop: learning, data parallelism, resume, NaN guard, early stopping."""

from __future__ import annotations

import functools
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax import metrics
from papt_jax.errors import UserError
from papt_jax.models import get_preset
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.tasks import HubertForPretraining, HubertForRegression
from papt_jax.train import finetune, prediction, pretrain, sharding
from papt_jax.train.checkpoint import Checkpoints
from papt_jax.train.loop import LoopConfig, NonFiniteEvaluationError, NonFiniteLossError, run_loop
from papt_jax.train.metric_writer import MetricWriter
from papt_jax.train.state import (
    TrainState,
    guarded_update,
    make_optimizer,
    warmup_linear_schedule,
)

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


LOSS_CFG = pretrain.PretrainLossConfig(mask_prob=0.5, mask_length=10, features_pen_weight=0.0)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_finetune_step_is_one_program_for_every_dimension():
    """Arousal and valence give the step the same inputs, so they lower to the same HLO (and
    the second dimension's compilations come from the persistent cache)."""
    rs = np.random.RandomState(6)
    batch = tone_batch(rs, 4)
    arousal = finetune.training_batch(batch, "arousal")
    valence = finetune.training_batch(batch, "valence")
    np.testing.assert_array_equal(arousal["label"], batch["arousal"])
    np.testing.assert_array_equal(valence["label"], batch["valence"])
    assert set(arousal) == {"audio", "audio_mask", "example_mask", "speaker", "label"}
    mesh = sharding.make_mesh(1)
    model = HubertForRegression(get_preset("tiny"), freeze_feature_extractor=True)
    variables = finetune.init_variables(model, jax.random.PRNGKey(0))
    tx = make_optimizer(1e-3, 10, schedule="constant", params=variables["params"])
    state = TrainState.create(
        apply_fn=None, params=variables["params"], tx=tx, batch_stats=variables["batch_stats"]
    )
    step = finetune.make_train_step(model, finetune.LabelScaling("none"), mesh)
    rng = jax.random.PRNGKey(0)
    texts = [step.lower(state, b, rng).as_text() for b in (arousal, valence)]
    assert texts[0] == texts[1]


@pytest.mark.slow
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
    step = finetune.make_train_step(model, scaling, mesh)
    losses = []
    for i in range(60):
        batch = finetune.training_batch(batches[i % 3], "arousal")
        state, metrics = step(state, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(0))
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.2, losses
    frozen_after = jax.device_get(state.params["hubert"]["feature_extractor"])
    for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen_after), strict=True):
        np.testing.assert_array_equal(a, b)
    predict_step = finetune.make_predict_step(model, scaling, mesh)
    for b in batches:
        b["key"] = np.asarray([f"u{i}" for i in range(len(b["audio"]))], dtype=object)
    out = prediction.predict(
        predict_step, {"params": state.params, "batch_stats": state.batch_stats}, batches, mesh
    )
    assert out["prediction"].shape == (24,) and out["pooled"].shape == (24, cfg.hidden_size)
    # Predictions come back on the 1..7 label scale: 1 + 6 * raw model output.
    # Compiled as one program: run op by op, the apply compiled ~200 one-primitive programs.
    raw, _ = jax.jit(functools.partial(model.apply, train=False))(
        {"params": state.params, "batch_stats": state.batch_stats},
        batches[0]["audio"],
        batches[0]["audio_mask"],
    )
    # The sharded step and a plain apply are different programs: their float32 sums differ
    # by ~1e-7 of the raw output, which is ~1e-6 on the label scale (a relative bound alone
    # fails for predictions near 0).
    np.testing.assert_allclose(
        out["prediction"][:8], 1.0 + 6.0 * np.asarray(raw), rtol=1e-5, atol=1e-5
    )


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


@pytest.mark.slow
@pytest.mark.parametrize("mode, centre", [("none", 4.0), ("unit", 0.5)])
def test_regression_head_starts_at_the_centre_of_the_label_scale(mode, centre):
    model = HubertForRegression(get_preset("tiny"), head_dropout=0.0)
    head = finetune.init_head_variables(model, jax.random.PRNGKey(0))["params"]["head"]
    centred = finetune.centre_output_bias(head, finetune.LabelScaling(mode))
    np.testing.assert_array_equal(centred["output"]["bias"], [centre])
    # Everything else is untouched, and the input tree is not modified in place.
    assert float(head["output"]["bias"][0]) == 0.0
    np.testing.assert_array_equal(centred["output"]["kernel"], head["output"]["kernel"])
    np.testing.assert_array_equal(centred["dense_0"]["kernel"], head["dense_0"]["kernel"])


# --- The loop's checkpoints and logs, on a toy linear model (compiles in well under a second) ---

TOY_STEPS, TOY_EVAL_EVERY = 9, 3
TOY_SCHEDULE = warmup_linear_schedule(0.05, TOY_STEPS, warmup_fraction=0.3)


def toy_batches(n=4, seed=0):
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        x = rs.randn(4, 4).astype(np.float32)
        lengths = rs.randint(800, 1601, 4)
        out.append(
            {
                "x": x,
                "y": (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0).astype(np.float32),
                "audio_mask": np.arange(1600)[None] < lengths[:, None],
            }
        )
    return out


@functools.cache
def toy_setup():
    tx = make_optimizer(0.05, TOY_STEPS, warmup_fraction=0.3, clip_norm=None)
    params = {"w": np.zeros(4, np.float32), "b": np.zeros((), np.float32)}
    state = jax.device_get(TrainState.create(apply_fn=None, params=params, tx=tx))
    mesh = sharding.make_mesh(1)

    @jax.jit
    def step(state, batch, rng):
        def loss_fn(p):
            return jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        state, _, finite = guarded_update(state, grads, loss)
        return state, {"loss": loss, "finite": finite}

    return state, step, mesh


def toy_eval(batches):
    def evaluate(state):
        p = jax.device_get(state.params)
        return {
            "loss": float(
                np.mean([np.mean((b["x"] @ p["w"] + p["b"] - b["y"]) ** 2) for b in batches])
            )
        }

    return evaluate


class KilledAt(ListIterator):
    """Raises KeyboardInterrupt (a kill) when asked for the batch of step `kill_step`."""

    def __init__(self, batches, kill_step):
        super().__init__(batches)
        self.kill_step = kill_step

    def __next__(self):
        if self.kill_step is not None and self.position + 1 == self.kill_step:
            raise KeyboardInterrupt
        return super().__next__()


def toy_run(
    tmp_path, batches=None, evaluate=None, kill_step=None, log_every=1, mode="min", metric="loss"
):
    state, step, mesh = toy_setup()
    batches = batches or toy_batches()
    checkpoints = Checkpoints(str(tmp_path / "ckpt"))
    writer = MetricWriter(str(tmp_path / "logs"))
    try:
        return run_loop(
            state=sharding.replicate(state, mesh),
            train_step=step,
            evaluate=evaluate or toy_eval(batches),
            train_iter=KilledAt(batches, kill_step),
            mesh=mesh,
            rng=jax.random.PRNGKey(0),
            checkpoints=checkpoints,
            writer=writer,
            config=LoopConfig(
                total_steps=TOY_STEPS,
                eval_every=TOY_EVAL_EVERY,
                log_every=log_every,
                best_metric=metric,
                best_mode=mode,
            ),
            description="toy",
            learning_rate=TOY_SCHEDULE,
        )
    finally:
        writer.close()
        checkpoints.close()


def assert_same_params(a, b):
    for x, y in zip(
        jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)), strict=True
    ):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_kill_between_best_and_latest_saves_resumes(tmp_path, monkeypatch):
    full = toy_run(tmp_path / "full")
    save_latest = Checkpoints.save_latest

    def killed_at_6(self, step, state, meta):
        if step == 6:
            raise KeyboardInterrupt  # best/6 is saved, latest/6 is not
        save_latest(self, step, state, meta)

    monkeypatch.setattr(Checkpoints, "save_latest", killed_at_6)
    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path / "killed")
    monkeypatch.undo()
    ckpt = Checkpoints(str(tmp_path / "killed" / "ckpt"))
    assert ckpt.best_steps() == [6] and ckpt.latest_steps() == [3]
    # Before: StepAlreadyExistsError on every resume (best/6 is saved again).
    resumed = toy_run(tmp_path / "killed")
    assert resumed.finished and resumed.step == TOY_STEPS and resumed.best_step == full.best_step
    assert_same_params(full.state.params, resumed.state.params)
    best, meta = ckpt.restore_best(full.state, step=resumed.best_step)
    assert meta["step"] == full.best_step
    assert_same_params(
        full.state.params if full.best_step == TOY_STEPS else best.params, best.params
    )


def test_damaged_latest_step_resumes_from_the_previous_one(tmp_path, caplog):
    full = toy_run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path / "run", kill_step=8)
    latest = tmp_path / "run" / "ckpt" / "latest"
    assert sorted(p.name for p in latest.iterdir()) == ["3", "6"]
    (latest / "6" / "manifest.sha256.json").unlink()  # as if killed before the manifest
    with caplog.at_level(logging.WARNING):
        resumed = toy_run(tmp_path / "run")
    assert "step 6" in caplog.text and "from step 3" in caplog.text
    assert_same_params(full.state.params, resumed.state.params)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def tensorboard_steps(logdir, tag):
    """Steps of `tag` as TensorBoard shows them (its own reader, purges applied)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resumed_run_logs_each_step_once(tmp_path):
    # Killed at step 8: steps 7 and 8 were logged, the checkpoint is at step 6.
    with pytest.raises(KeyboardInterrupt):
        toy_run(tmp_path, kill_step=8)
    logs = tmp_path / "logs"
    logged = [r["step"] for r in read_jsonl(logs / "metrics.jsonl") if "train/loss" in r]
    assert logged == list(range(1, 8))
    toy_run(tmp_path)
    records = read_jsonl(logs / "metrics.jsonl")
    train_steps = [r["step"] for r in records if "train/loss" in r]
    eval_steps = [r["step"] for r in records if "eval/loss" in r]
    assert train_steps == list(range(1, TOY_STEPS + 1))  # before: 7 twice
    assert eval_steps == [3, 6, 9]
    assert len(list(logs.glob("events.*"))) == 2
    assert tensorboard_steps(logs, "train/loss") == list(range(1, TOY_STEPS + 1))
    assert tensorboard_steps(logs, "eval/loss") == [3, 6, 9]


def test_tensorboard_without_a_purge_shows_resumed_steps_twice(tmp_path):
    """The fault the purge fixes, shown with TensorBoard's own reader."""
    from tensorboardX import SummaryWriter

    for steps in (range(1, 8), range(7, 10)):
        writer = SummaryWriter(str(tmp_path), filename_suffix=f".{len(list(tmp_path.iterdir()))}")
        for s in steps:
            writer.add_scalar("train/loss", 1.0, s)
        writer.close()
    assert tensorboard_steps(tmp_path, "train/loss").count(7) == 2


def test_learning_rate_and_throughput_are_logged(tmp_path):
    toy_run(tmp_path, log_every=2)
    train = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 9]
    for r in train:
        assert r["train/lr"] == pytest.approx(float(TOY_SCHEDULE(r["step"] - 1)))
        assert r["train/audio_sec_per_sec"] > 0
    assert len({r["train/lr"] for r in train}) > 2  # the schedule moves


def test_non_finite_validation_score_is_a_failure_not_a_poor_epoch(tmp_path):
    # Before, metrics.ccc gave 0.0 for NaN predictions and early stopping saw a poor epoch.
    def evaluate(state):
        return {"ccc": metrics.ccc([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0])}

    with pytest.raises(
        NonFiniteEvaluationError, match=r"toy: the evaluation at step 3 gave ccc=nan"
    ) as info:
        toy_run(tmp_path, evaluate=evaluate, mode="max", metric="ccc")
    assert isinstance(info.value, UserError) and "metrics.jsonl" in info.value.hint
    assert "no checkpoint has been saved yet" in str(info.value)
    assert not list((tmp_path / "ckpt" / "best").iterdir())


def test_nan_guard_names_what_exists_not_a_checkpoint_that_is_not_there(tmp_path):
    batches = toy_batches()
    bad = dict(batches[1])
    bad["x"] = np.full_like(bad["x"], np.nan)
    with pytest.raises(NonFiniteLossError) as info:
        toy_run(tmp_path, batches=[batches[0], bad, *batches[2:]])
    message = str(info.value)
    assert "no checkpoint has been saved yet" in message and "last good" not in message
    assert "pseudo-label" in info.value.hint


@pytest.mark.slow
def test_head_only_initialisation_equals_the_whole_models():
    """Training that brings its own encoder initialises only the rest, bit for bit the
    values the whole model's initialisation gives them (the encoder's is not compiled)."""
    model, state, *_ = pretrain_setup(1)
    head = jax.device_get(pretrain.init_head_params(model, jax.random.PRNGKey(0)))
    assert set(head) == set(state.params) - {"hubert"}
    for a, b in zip(jax.tree.leaves(head), jax.tree.leaves(state.params["head"]), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    regression = HubertForRegression(get_preset("tiny", num_speakers=2, speaker_fusion="last"))
    whole = jax.device_get(finetune.init_variables(regression, jax.random.PRNGKey(3)))
    ours = jax.device_get(finetune.init_head_variables(regression, jax.random.PRNGKey(3)))
    assert set(ours["params"]) == set(whole["params"]) - {"hubert"}
    whole["params"].pop("hubert")
    ours_leaves, structure = jax.tree.flatten(ours)
    assert structure == jax.tree.structure(whole)
    for a, b in zip(ours_leaves, jax.tree.leaves(whole), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
