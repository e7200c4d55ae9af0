"""Command-line entry point: `python -m papt_jax.main --config=configs/papt.py --workdir=DIR`.

Everything happens in `papt_jax.pipeline`; this file only parses flags and sets up
multi-host JAX when asked to.
"""

from __future__ import annotations

import logging
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from papt_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/papt.py or configs/papt.py:demo."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every output of the run.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() first (multi-host: SLURM, Open MPI, TPU pods).",
)
_LIBRARY_LOGS = flags.DEFINE_bool(
    "library_logs",
    False,
    "Also show the INFO lines of Orbax (dozens per checkpoint save); warnings always show.",
)
flags.mark_flags_as_required(["config", "workdir"])


class QuietLibraryInfo(logging.Filter):
    """Drops INFO records logged from inside the named packages; keeps warnings and errors."""

    def __init__(self, packages: tuple[str, ...] = ("orbax",)):
        super().__init__()
        self._markers = tuple(f"{os.sep}{p}{os.sep}" for p in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(m in record.pathname for m in self._markers)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not _LIBRARY_LOGS.value:
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietLibraryInfo())
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
