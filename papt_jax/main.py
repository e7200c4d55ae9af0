"""Command-line entry point: `python -m papt_jax.main --config=configs/papt.py --workdir=DIR`.

Everything happens in `papt_jax.pipeline`; this file only parses flags and sets up
multi-host JAX when asked to.
"""

from __future__ import annotations

import logging

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
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
