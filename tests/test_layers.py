"""No papt_jax module imports from a layer above its own (checked on the source, with ast).

Imports inside functions count as much as those at the top of a file: a deferred import is
still a dependency. A module may import from its own layer and from any layer below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "papt_jax"

# Lowest first. A module belongs to the layer of the longest prefix below that names it
# (papt_jax.data.audio is in "foundation", the rest of papt_jax.data in "data"). A package's
# `__main__` (its command line) is part of that package's layer.
#
#   foundation   errors (UserError), cli (the absl runner every command line uses) with
#                config_overrides (its --config.KEY=VALUE reader), progress (console
#                progress bars), interrupts (SIGTERM / SIGINT), storage (safe writes, OS
#                failures as one line), child_processes (workers that end with their
#                parent), and data.audio: the sample rate and the frame grid everything
#                else is built on
#   models       the Flax encoder and heads; no data, training or conversion code
#   data         MSP-Podcast reader, dataset builder, batch plan, Grain pipeline, synthetic
#                corpus
#   numerics     features, k-means, masking, losses (masked prediction), contrastive
#                (wav2vec 2.0's objective), utterance mixing (WavLM's), metrics, PLDC, the
#                B2 baseline, shift analysis, significance, pseudo-labels (uses the encoder,
#                so above models)
#   convert      PyTorch/Hugging Face/fairseq <-> Flax checkpoints
#   train        state, sharding, checkpoints, loop, pre-training and fine-tuning steps
#   eval         evaluation protocol, results, tables, figures, report, comparisons
#   experiment   the config (defaults, settings) and the staged run of an experiment
#   predict      prediction on new audio with a finished experiment's models and profiles
#   export       a finished run written as one self-contained folder (uses predict's assets)
#   entry        papt_jax.main, the experiment command line, and the papt_jax package itself:
#                its __init__ re-exports the Predictor (imported on first attribute use, so
#                importing any submodule stays light)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "papt_jax.errors",
            "papt_jax.cli",
            "papt_jax.interrupts",
            "papt_jax.storage",
            "papt_jax.child_processes",
            "papt_jax.config_overrides",
            "papt_jax.progress",
            "papt_jax.data.audio",
        ),
    ),
    ("models", ("papt_jax.models",)),
    ("data", ("papt_jax.data",)),
    (
        "numerics",
        (
            "papt_jax.features",
            "papt_jax.kmeans",
            "papt_jax.masking",
            "papt_jax.losses",
            "papt_jax.contrastive",
            "papt_jax.utterance_mixing",
            "papt_jax.metrics",
            "papt_jax.pldc",
            "papt_jax.b2",
            "papt_jax.shift_analysis",
            "papt_jax.significance",
            "papt_jax.pseudo_labels",
            "papt_jax.pseudo_label_files",
        ),
    ),
    ("convert", ("papt_jax.convert",)),
    ("train", ("papt_jax.train",)),
    ("eval", ("papt_jax.eval",)),
    ("experiment", ("papt_jax.experiment",)),
    ("predict", ("papt_jax.predict",)),
    ("export", ("papt_jax.export",)),
    ("entry", ("papt_jax", "papt_jax.main", "papt_jax.config_defaults")),
)


def module_name(path: Path) -> str:
    """papt_jax/data/__init__.py -> papt_jax.data; papt_jax/data/audio.py -> papt_jax.data.audio."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the longest matching prefix; None if no layer names the module."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            # The bare "papt_jax" prefix names only the package itself, not everything in it.
            if prefix == "papt_jax" and module != prefix:
                matches = False
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def imported_modules(module: str, source: str) -> set[str]:
    """papt_jax modules `source` (of `module`) imports anywhere; a named submodule counts."""
    package = module if module in PACKAGES else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {name for name in found if name == "papt_jax" or name.startswith("papt_jax.")}


def upward_imports(module: str, source: str) -> list[str]:
    """'module (layer) imports other (higher layer)' for every import from above."""
    own = layer_of(module)
    problems = []
    for other in sorted(imported_modules(module, source)):
        theirs = layer_of(other)
        if theirs is not None and own is not None and theirs > own:
            problems.append(f"{module} ({LAYERS[own][0]}) imports {other} ({LAYERS[theirs][0]})")
    return problems


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if layer_of(name) is None]
    assert not unplaced, f"add these modules to a layer in tests/test_layers.py: {unplaced}"


def test_no_module_imports_from_a_layer_above():
    problems = []
    for name, path in MODULES.items():
        problems += upward_imports(name, path.read_text())
    assert not problems, "upward imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "upward"),
    [
        ("papt_jax.models.config", "from papt_jax.train import state", True),
        ("papt_jax.models.config", "def f():\n    import papt_jax.experiment.run", True),
        ("papt_jax.data.audio", "from papt_jax.data import msp_podcast", True),
        ("papt_jax.data.msp_podcast", "from papt_jax.data import audio", False),
        ("papt_jax.train.loop", "from papt_jax.models.config import HubertConfig", False),
        ("papt_jax.eval.results", "from . import tables", False),
        ("papt_jax.train.loop", "from ..eval import results", True),
    ],
)
def test_the_check_sees_upward_imports(module, source, upward):
    assert bool(upward_imports(module, source)) == upward
