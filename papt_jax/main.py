"""Command-line entry point: `python -m papt_jax.main --config=configs/papt.py --workdir=DIR`.

Everything happens in `papt_jax.experiment`; this file only parses flags, sets up logging
and multi-host JAX when asked to. `--config.KEY=VALUE` overrides any setting; every key,
its default and its meaning: `python -m papt_jax.main --config=configs/papt.py --show_config`
lists them (they are documented in papt_jax/experiment/config_defaults.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

# XLA's C++ messages (e.g. a "Very slow compile?" banner on a loaded machine) are hidden
# like the Python libraries' chatter unless --library_logs asks for them. Set before jax
# is imported; errors still surface as Python exceptions.
if not any(a.replace("-", "_").startswith("--library_logs") for a in sys.argv[1:]):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from papt_jax import cli, interrupts, storage  # noqa: E402
from papt_jax.experiment import describe, settings  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/papt.py or configs/papt.py:demo."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every output of the run.")
_REDO = flags.DEFINE_list(
    "redo",
    [],
    "Stages to run again although complete (e.g. --redo=finetune); every stage that reads "
    "their outputs is redone too.",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() first (multi-host: SLURM, Open MPI, TPU pods).",
)
_SHOW_CONFIG = flags.DEFINE_bool(
    "show_config",
    False,
    "Print every config key with its value (after --config.* overrides) and its meaning, "
    "then exit.",
)
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache",
    os.environ.get("PAPT_JAX_COMPILATION_CACHE", "~/.cache/papt_jax/xla"),
    "Folder of JAX's persistent compilation cache, shared by every run and workdir, so a "
    "rerun or a resumed run reuses compiled steps; '' turns it off. Default from the "
    "PAPT_JAX_COMPILATION_CACHE environment variable, else ~/.cache/papt_jax/xla.",
)
_LIBRARY_LOGS = flags.DEFINE_bool(
    "library_logs",
    False,
    "Also show the libraries' INFO lines (Orbax, JAX backend probing, absl); warnings always show.",
)
flags.mark_flags_as_required(["config"])

# Packages whose INFO lines say nothing a user acts on (Orbax: dozens per checkpoint save;
# JAX: probing for accelerators that were never asked for; TFDS: "Load dataset info" per
# pass and raw shard patterns).
QUIET_PACKAGES = ("orbax", "jax", "absl", "grain", "tensorflow_datasets")


class QuietLibraryInfo(logging.Filter):
    """Drops INFO records logged from inside the named packages; keeps warnings and errors."""

    def __init__(self, packages: tuple[str, ...] = QUIET_PACKAGES):
        super().__init__()
        self._markers = tuple(f"{os.sep}{p}{os.sep}" for p in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(m in record.pathname for m in self._markers)


def _config_file_problem() -> str | None:
    """The config file named by --config, if it cannot be read (ml_collections loads lazily)."""
    path = flags.FLAGS["config"].config_filename.split(":")[0]
    if not os.path.isfile(path):
        return f"--config={path}: no such file"
    return None


def warn_once_about_the_cache() -> None:
    """JAX warns at every compiled step it fails to store in the persistent cache (a full
    disk): the first warning is shown, with a note that the rest are not."""
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if str(message).startswith("Error writing persistent compilation cache entry"):
            if getattr(showwarning, "shown", False):
                return
            showwarning.shown = True
            message = f"{message} (further cache write failures are not shown)"
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def enable_compilation_cache(folder: str) -> bool:
    """Turns on JAX's persistent compilation cache in `folder` (created if missing).

    A folder that cannot be written (read-only, no permission, a file) gives one warning
    and the run goes on without the cache; JAX would warn again at every compilation.

    Returns:
      Whether the cache is on.
    """
    import jax

    path = os.path.abspath(os.path.expanduser(folder))
    problem = storage.writable_dir_problem(path)
    if problem is not None:
        logging.warning(
            "--compilation_cache=%s %s: compiled steps are not cached in this run (choose "
            "another folder, or '' to turn the cache off)",
            path,
            problem,
        )
        return False
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every compiled step, not only slow ones: a run compiles a few dozen programs.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise settings.ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    if not _LIBRARY_LOGS.value:
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietLibraryInfo())
    cli.quiet_write_failure_noise()  # the handlers are new
    warn_once_about_the_cache()
    problem = _config_file_problem()
    if problem:
        raise settings.ConfigError(problem, hint="configs/ holds papt.py, tapt.py, vanilla_ft.py")
    # Overrides that could not be applied are listed with every other problem of the config.
    problems = cli.override_problems()
    if problems and _SHOW_CONFIG.value:
        raise settings.ConfigError(
            "cannot apply these overrides:\n  - " + "\n  - ".join(problems),
            hint="--show_config without them lists every setting",
        )
    if problems:
        settings.validate(_CONFIG.value, problems)
    if _SHOW_CONFIG.value:
        print(describe.describe(_CONFIG.value))
        return 0
    if not _WORKDIR.value:
        raise settings.ConfigError("--workdir is not set", hint="--workdir=runs/NAME")
    # Every config problem is found before the pipeline is imported (run() checks again).
    settings.validate(_CONFIG.value)
    # Imported here, not at the top: the pipeline pulls in jax, optax, matplotlib, scipy
    # and the data stack (seconds), which a mistyped flag or --show_config never needs.
    import jax

    from papt_jax.experiment.run import run as run_experiment

    if _COMPILATION_CACHE.value:
        enable_compilation_cache(_COMPILATION_CACHE.value)
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    # SIGTERM / SIGINT: a training stage saves its current step, then one line and exit
    # code 75 (cli.py). Several hosts leave SIGTERM to JAX's preemption sync.
    signals = (signal.SIGINT,) if jax.process_count() > 1 else interrupts.HANDLED_SIGNALS
    with interrupts.handling(signals):
        # A run stopped early on purpose (stop_after_steps) is a success: run again to resume.
        run_experiment(_CONFIG.value, _WORKDIR.value, redo=tuple(_REDO.value))
    return 0


if __name__ == "__main__":
    cli.run(main, sys.argv)
