"""The training loop shared by pre-training and fine-tuning.

The loop owns what both stages have in common: resuming from the latest checkpoint
(train state, data-iterator state, counters), the jitted step in the hot loop with no
host synchronisation except every `log_every` steps, periodic evaluation with a
best checkpoint and optional early stopping, the NaN/inf guards, logging and progress.

Every `log_every` steps the loop logs, beside the step metrics, the learning rate of the
last update (`lr`, when the schedule is given) and the throughput (`train.throughput`):
seconds of audio per second of wall time (`audio_sec_per_sec`: the real samples of
`audio_mask`, counted on the host from the NumPy batches, so it costs no device sync), XLA's
FLOPs per step (`flops_per_step`) and, on a device whose peak is known, the model FLOP
utilisation (`mfu`, also shown in the progress bar). Each new batch shape is compiled
ahead of its first call (`jitted.lower(...).compile()`, the executable the call then reuses),
which is where the FLOPs are read; compilation, evaluation and checkpoint time are left out
of the rates.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from papt_jax import interrupts
from papt_jax import progress as progress_lib
from papt_jax.errors import UserError
from papt_jax.train import preemption
from papt_jax.train.checkpoint import Checkpoints
from papt_jax.train.metric_writer import MetricWriter
from papt_jax.train.sharding import shard_batch
from papt_jax.train.throughput import StepCost, ThroughputMeter, step_cost

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN/inf loss or gradient; the saved checkpoints are untouched."""


class NonFiniteEvaluationError(UserError, RuntimeError):
    """An evaluation score is NaN/inf: a failed evaluation, never a poor one."""


class CheckpointableIterator(Protocol):
    """A batch iterator whose position can be saved and restored."""

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to log, evaluate and checkpoint.

    Attributes:
      total_steps: Optimiser steps of the whole run.
      eval_every: Steps between evaluations (and checkpoints); usually one epoch.
      log_every: Steps between host reads of the metrics (the only host sync).
      best_metric: Name of the evaluation metric that selects the best checkpoint.
      best_mode: 'min' or 'max'.
      patience: Stop after this many evaluations without improvement (None: never).
      stop_after_steps: Stop (as if killed) once this step is reached, after saving
        the latest checkpoint; a later run resumes. For tests and time-boxed jobs.
      checkpoint_every_minutes: Also save the latest checkpoint when this many minutes
        have passed since the last save (0: only at evaluations); see `preemption`.
    """

    total_steps: int
    eval_every: int
    log_every: int
    best_metric: str = "loss"
    best_mode: str = "min"
    patience: int | None = None
    stop_after_steps: int | None = None
    checkpoint_every_minutes: float = 0.0

    def __post_init__(self):
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        if self.total_steps <= 0 or self.eval_every <= 0 or self.log_every <= 0:
            raise ValueError(f"steps must be positive: {self}")


@dataclasses.dataclass
class LoopResult:
    """What a call of `run_loop` reached.

    Attributes:
      state: The train state at `step`.
      step: Steps done.
      best: Best evaluation score so far (None before the first evaluation).
      history: One dict per evaluation: {"step": ..., metric: value, ...}.
      finished: False when stopped by `stop_after_steps` before the end.
      stopped_early: True when early stopping ended the run.
      best_step: Step of the best evaluation (None before the first evaluation).
    """

    state: Any
    step: int
    best: float | None
    history: list[dict[str, float]]
    finished: bool
    stopped_early: bool
    best_step: int | None = None


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    host = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def _shown(means: dict[str, float]) -> dict[str, str]:
    """The progress bar's postfix: the logged metrics a person reads at a glance."""
    hidden = ("finite", "lr", "flops_per_step", "mfu")
    shown = {k: f"{v:.4g}" for k, v in means.items() if k not in hidden}
    if "mfu" in means:
        shown["mfu"] = f"{100 * means['mfu']:.1f}%"
    return shown


def _learning_rate(schedule, step: int) -> float:
    """The rate the update of `step` used: optax counts updates from 0."""
    return float(schedule(step - 1)) if callable(schedule) else float(schedule)


def _save_between_evaluations(
    schedule: preemption.SaveSchedule,
    step: int,
    saved_at_step: bool,
    save_latest: Callable[[], None],
    checkpoints: Checkpoints,
    description: str,
) -> None:
    """Acts on `schedule.due(step)`: saves the latest checkpoint (with the input position)
    when a stop was requested or the clock says so; on a stop, raises `Interrupted`."""
    action = schedule.due(step)
    if action is None:
        return
    if not saved_at_step:
        save_latest()
    if action == preemption.TIMER:
        return
    log.info("%s: %s received, saved step %d; stopping", description, action, step)
    raise interrupts.Interrupted(
        action, saved=f"{description} saved step {step} in {checkpoints.latest_dir}"
    )


def run_loop(
    *,
    state,
    train_step: Callable,
    evaluate: Callable[[Any], dict[str, float]],
    train_iter: CheckpointableIterator,
    mesh: Mesh,
    rng: jax.Array,
    checkpoints: Checkpoints,
    writer: MetricWriter,
    config: LoopConfig,
    description: str = "train",
    learning_rate: Callable[[int], Any] | float | None = None,
    batch_view: Callable[[dict], dict] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
) -> LoopResult:
    """Trains until `total_steps`, early stopping or `stop_after_steps`.

    Args:
      state: Replicated initial TrainState (replaced by the latest checkpoint if any).
      train_step: Jitted `(state, batch, rng) -> (state, metrics)`; metrics are device
        scalars and include `finite` (1.0 when the update was applied). Its `.lower`
        compiles each batch shape and gives XLA's FLOP count; a callable without one
        trains the same, with no `flops_per_step` or `mfu` logged.
      evaluate: `state -> {metric: float}`, run every `eval_every` steps.
      train_iter: Endless iterator of host batches with get_state/set_state; batches
        hold `audio_mask` (batch, samples) for the throughput count.
      mesh: Device mesh; batches are sharded over its data axis.
      rng: Base PRNG key; the step folds in the step number.
      checkpoints: Where latest/best checkpoints live.
      writer: Metric writer (started here at the resumed step).
      config: Loop settings.
      description: Progress-bar and message label, e.g. 'finetune[arousal]'.
      learning_rate: The optimiser's schedule (optax: update count -> rate) or constant
        rate, logged as `train/lr`; None logs no rate.
      batch_view: Host-side `batch -> batch` applied before the step (None: the batch as
        the iterator gives it), e.g. to keep only the arrays the step reads.
      on_metrics: Called with the step and the logged training means every `log_every`
        steps (after the finiteness check), e.g. to warn about a collapsing codebook.

    Returns:
      A LoopResult; `finished` is False when stopped by `stop_after_steps`.

    Raises:
      papt_jax.interrupts.Interrupted: on SIGTERM / SIGINT received inside
        `interrupts.deferred()`, after saving the current step.
      NonFiniteLossError: when a step produced NaN/inf (updates from then on were skipped
        inside the step, so the state in memory and on disk is the last good one).
      NonFiniteEvaluationError: when the score that selects the best checkpoint is NaN/inf.
      CheckpointError: when checkpoints exist but none of them is usable.
    """
    step, best, best_step, bad_evals, history = 0, None, None, 0, []
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state, meta = restored
        step, best, bad_evals = int(meta["step"]), meta["best"], int(meta["bad_evals"])
        best_step = meta.get("best_step")
        history = list(meta.get("history", []))
        train_iter.set_state(meta["data_state"])
        log.info("%s: resumed from step %d (best %s)", description, step, best)
        if meta.get("stopped_early"):
            return LoopResult(state, step, best, history, True, True, best_step)
    writer.start(step)
    schedule = preemption.SaveSchedule(config.checkpoint_every_minutes, config.log_every)

    def save_latest(stopped_early=False):
        checkpoints.save_latest(
            step,
            state,
            {
                "step": step,
                "best": best,
                "best_step": best_step,
                "bad_evals": bad_evals,
                "history": history,
                "data_state": train_iter.get_state(),
                "stopped_early": stopped_early,
            },
        )
        schedule.saved()

    pending: list[dict[str, jax.Array]] = []
    # One entry per compiled batch shape: XLA's FLOP count (None when not available).
    step_costs: dict[tuple, StepCost | None] = {}
    throughput = ThroughputMeter()
    progress = progress_lib.bar(
        total=config.total_steps,
        initial=step,
        desc=description,
        unit="steps",
        disable=jax.process_index() != 0,
    )
    stopped_early = False
    try:
        while step < config.total_steps:
            host_batch = next(train_iter)
            if batch_view is not None:
                host_batch = batch_view(host_batch)
            batch = shard_batch(host_batch, mesh)
            shape = tuple(sorted((k, np.shape(v)) for k, v in host_batch.items()))
            if shape not in step_costs:
                # Compiled ahead of the call (which reuses the executable), once per shape,
                # to read its FLOPs; its time is not training throughput.
                progress.set_description_str(f"{description} (compiling)")
                with throughput.excluded():
                    step_costs[shape] = step_cost(train_step, state, batch, rng)
                progress.set_description_str(description)
            state, metrics = train_step(state, batch, rng)
            throughput.add(host_batch, step_costs[shape])
            step += 1
            pending.append(metrics)
            # Host-side counter every step (a smooth ETA); device metrics only every log_every.
            progress.update(1)
            if step % config.log_every == 0 or step == config.total_steps:
                means = _mean_metrics(pending)
                pending = []
                if means.get("finite", 1.0) < 1.0:
                    raise NonFiniteLossError(
                        f"{description}: non-finite loss or gradient before step {step}; the "
                        "offending updates were skipped and training stopped. "
                        + checkpoints.describe(),
                        hint=(
                            "check the input data (NaN/inf audio, out-of-range labels or "
                            "pseudo-label ids), then lower the learning rate or enable "
                            "gradient clipping"
                        ),
                    )
                means.update(throughput.read())
                if learning_rate is not None:
                    means["lr"] = _learning_rate(learning_rate, step)
                writer.write_scalars(step, means, prefix="train/")
                progress.set_postfix(_shown(means))
                if on_metrics is not None:
                    on_metrics(step, means)
            if step % config.eval_every == 0 or step == config.total_steps:
                scores = evaluate(state)
                writer.write_scalars(step, scores, prefix="eval/")
                history.append({"step": step, **scores})
                value = scores[config.best_metric]
                if not math.isfinite(value):
                    raise NonFiniteEvaluationError(
                        f"{description}: the evaluation at step {step} gave "
                        f"{config.best_metric}={value}: the model's outputs on the evaluation "
                        "data are not finite, so this evaluation failed (it is not a poor "
                        "score). " + checkpoints.describe(),
                        hint=(
                            f"look for a diverging train/loss in {writer.logdir}/metrics.jsonl "
                            "(lower the learning rate) and for NaN/inf audio or labels in the "
                            "evaluation split"
                        ),
                    )
                if _improved(value, best, config.best_mode):
                    best, best_step, bad_evals = value, step, 0
                    checkpoints.save_best(step, state, {"step": step, **scores})
                else:
                    bad_evals += 1
                log.info("%s step %d: %s", description, step, scores)
                stopped_early = config.patience is not None and bad_evals >= config.patience
                save_latest(stopped_early)
                throughput.restart()
                if stopped_early:
                    log.info(
                        "%s: early stop after %d evaluations without gain", description, bad_evals
                    )
                    break
            evaluated = step % config.eval_every == 0 or step == config.total_steps
            _save_between_evaluations(
                schedule, step, evaluated, save_latest, checkpoints, description
            )
            if config.stop_after_steps is not None and step >= config.stop_after_steps:
                if step % config.eval_every:
                    save_latest()
                return LoopResult(state, step, best, history, False, False, best_step)
    finally:
        progress.close()
    return LoopResult(state, step, best, history, True, stopped_early, best_step)


def train_in_workdir(
    *,
    state,
    train_step: Callable,
    evaluate: Callable[[Any], dict[str, float]],
    train_data,
    mesh: Mesh,
    rng: jax.Array,
    workdir: str,
    config: LoopConfig,
    description: str,
    learning_rate: Callable[[int], Any] | float | None = None,
    batch_view: Callable[[dict], dict] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
):
    """`run_loop` with checkpoints in `<workdir>/checkpoints` and logs in `<workdir>/logs`.

    Args:
      train_data: A `BatchPipeline`; its iterator state goes into the checkpoints.
      Others: as in `run_loop`.

    Returns:
      (LoopResult, best state on the host) — None for the state when the run was
      stopped by `stop_after_steps` before the end.
    """
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"))
    writer = MetricWriter(os.path.join(workdir, "logs"))
    train_iter = train_data.iterator()
    try:
        # A SIGTERM / SIGINT only sets a flag here: the loop saves at the next step end.
        with interrupts.deferred():
            result = run_loop(
                state=state,
                train_step=train_step,
                evaluate=evaluate,
                train_iter=train_iter,
                mesh=mesh,
                rng=rng,
                checkpoints=checkpoints,
                writer=writer,
                config=config,
                description=description,
                learning_rate=learning_rate,
                batch_view=batch_view,
                on_metrics=on_metrics,
            )
        best = None
        if result.finished:
            best, _ = checkpoints.restore_best(result.state, step=result.best_step)
            best = jax.device_get(best)
    finally:
        # Stops Grain's workers and frees their shared memory now, also when interrupted.
        train_iter.close()
        writer.close()
        checkpoints.close()
    return result, best
