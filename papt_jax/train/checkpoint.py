"""Orbax checkpoints: the latest state for resuming, and the best by a metric.

Two managers side by side in `<dir>/latest` and `<dir>/best`, one checkpoint each.
`latest` holds the whole train state plus JSON metadata (data-iterator state, loop
counters) so a killed run resumes where it stopped; `best` holds the state of the
best evaluation so far and is written only when the metric improves.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _abstract(tree):
    """Shape/dtype/sharding targets so Orbax restores onto the same devices."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """Latest + best checkpoints of one training run."""

    def __init__(self, directory: str):
        directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self.directory = directory
        self.latest = ocp.CheckpointManager(os.path.join(directory, "latest"), options=options)
        self.best = ocp.CheckpointManager(os.path.join(directory, "best"), options=options)

    def _save(self, manager, step: int, state, meta: dict[str, Any]) -> None:
        # Blocking, so a kill right after cannot leave a torn checkpoint behind.
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        manager.wait_until_finished()

    def save_latest(self, step: int, state, meta: dict[str, Any]) -> None:
        """Saves the full state and JSON metadata (data-iterator state, counters)."""
        self._save(self.latest, step, state, meta)

    def save_best(self, step: int, state, meta: dict[str, Any]) -> None:
        """Saves the state of a new best evaluation, with its scores in `meta`."""
        self._save(self.best, step, state, meta)

    def _restore(self, manager, target_state):
        step = manager.latest_step()
        if step is None:
            return None
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(target_state)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored.state, dict(restored.meta)

    def restore_latest(self, target_state):
        """(state, meta) of the latest checkpoint, or None when there is none."""
        return self._restore(self.latest, target_state)

    def restore_best(self, target_state):
        """(state, meta) of the best checkpoint, or None when there is none."""
        return self._restore(self.best, target_state)

    def best_meta(self) -> dict[str, Any] | None:
        step = self.best.latest_step()
        if step is None:
            return None
        return dict(
            self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        )

    def close(self) -> None:
        self.latest.close()
        self.best.close()
