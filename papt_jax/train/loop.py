"""The training loop shared by pre-training and fine-tuning.

The loop owns what both stages have in common: resuming from the latest checkpoint
(train state, data-iterator state, counters), the jitted step in the hot loop with no
host synchronisation except every `log_every` steps, periodic evaluation with a
best checkpoint and optional early stopping, the NaN/inf guard, logging and progress.
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
from tqdm import tqdm

from papt_jax.train.checkpoint import Checkpoints
from papt_jax.train.logging import MetricWriter
from papt_jax.train.sharding import shard_batch

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


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
    """

    total_steps: int
    eval_every: int
    log_every: int = 10
    best_metric: str = "loss"
    best_mode: str = "min"
    patience: int | None = None
    stop_after_steps: int | None = None

    def __post_init__(self):
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")
        if self.total_steps <= 0 or self.eval_every <= 0 or self.log_every <= 0:
            raise ValueError(f"steps must be positive: {self}")


@dataclasses.dataclass
class LoopResult:
    state: Any
    step: int
    best: float | None
    history: list[dict[str, float]]
    finished: bool
    stopped_early: bool


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    host = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


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
) -> LoopResult:
    """Trains until `total_steps`, early stopping or `stop_after_steps`.

    Args:
      state: Replicated initial TrainState (replaced by the latest checkpoint if any).
      train_step: Jitted `(state, batch, rng) -> (state, metrics)`; metrics are device
        scalars and include `finite` (1.0 when the update was applied).
      evaluate: `state -> {metric: float}`, run every `eval_every` steps.
      train_iter: Endless iterator of host batches with get_state/set_state.
      mesh: Device mesh; batches are sharded over its data axis.
      rng: Base PRNG key; the step folds in the step number.
      checkpoints: Where latest/best checkpoints live.
      writer: Metric writer.
      config: Loop settings.
      description: Progress-bar label.

    Returns:
      A LoopResult; `finished` is False when stopped by `stop_after_steps`.

    Raises:
      NonFiniteLossError: when a step produced NaN/inf (updates from then on were skipped
        inside the step, so the state in memory and on disk is the last good one).
    """
    step, best, bad_evals, history = 0, None, 0, []
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state, meta = restored
        step, best, bad_evals = int(meta["step"]), meta["best"], int(meta["bad_evals"])
        history = list(meta.get("history", []))
        train_iter.set_state(meta["data_state"])
        log.info("%s: resumed from step %d (best %s)", description, step, best)
        if meta.get("stopped_early"):
            return LoopResult(state, step, best, history, True, True)

    def save_latest(stopped_early=False):
        checkpoints.save_latest(
            step,
            state,
            {
                "step": step,
                "best": best,
                "bad_evals": bad_evals,
                "history": history,
                "data_state": train_iter.get_state(),
                "stopped_early": stopped_early,
            },
        )

    pending: list[dict[str, jax.Array]] = []
    progress = tqdm(
        total=config.total_steps, initial=step, desc=description, disable=jax.process_index() != 0
    )
    stopped_early = False
    try:
        while step < config.total_steps:
            batch = shard_batch(next(train_iter), mesh)
            state, metrics = train_step(state, batch, rng)
            step += 1
            pending.append(metrics)
            if step % config.log_every == 0 or step == config.total_steps:
                means = _mean_metrics(pending)
                pending = []
                if means.get("finite", 1.0) < 1.0:
                    raise NonFiniteLossError(
                        f"{description}: non-finite loss or gradient before step {step}; the "
                        "offending updates were skipped and training stopped. The last good "
                        f"checkpoint is in {checkpoints.directory}/latest. Lower the learning "
                        "rate, check the input data, or enable gradient clipping."
                    )
                writer.write_scalars(step, means, prefix="train/")
                progress.set_postfix({k: f"{v:.4g}" for k, v in means.items() if k != "finite"})
                progress.update(step - progress.n)
            if step % config.eval_every == 0 or step == config.total_steps:
                scores = evaluate(state)
                writer.write_scalars(step, scores, prefix="eval/")
                history.append({"step": step, **scores})
                value = scores[config.best_metric]
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"{description}: evaluation {config.best_metric}={value} at step {step}"
                    )
                if _improved(value, best, config.best_mode):
                    best, bad_evals = value, 0
                    checkpoints.save_best(step, state, {"step": step, **scores})
                else:
                    bad_evals += 1
                log.info("%s step %d: %s", description, step, scores)
                stopped_early = config.patience is not None and bad_evals >= config.patience
                save_latest(stopped_early)
                if stopped_early:
                    log.info(
                        "%s: early stop after %d evaluations without gain", description, bad_evals
                    )
                    break
            if config.stop_after_steps is not None and step >= config.stop_after_steps:
                if step % config.eval_every:
                    save_latest()
                return LoopResult(state, step, best, history, False, False)
    finally:
        progress.close()
    return LoopResult(state, step, best, history, True, stopped_early)


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
    try:
        result = run_loop(
            state=state,
            train_step=train_step,
            evaluate=evaluate,
            train_iter=train_data.iterator(),
            mesh=mesh,
            rng=rng,
            checkpoints=checkpoints,
            writer=writer,
            config=config,
            description=description,
        )
        best = None
        if result.finished:
            best, _ = checkpoints.restore_best(result.state)
            best = jax.device_get(best)
    finally:
        writer.close()
        checkpoints.close()
    return result, best
