"""Command line: writes the synthetic corpus (`generate_corpus`) and prints a summary.

Usage::

    python -m papt_jax.data.synthetic --preset demo --out /tmp/syn_corpus --seed 0
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from absl import flags

from papt_jax import cli
from papt_jax.data.synthetic.corpus import generate_corpus
from papt_jax.data.synthetic.presets import CORPUS_PRESETS
from papt_jax.errors import UserError


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the command-line flags; called only when this module is the program."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_enum("preset", "smoke", sorted(CORPUS_PRESETS), "Corpus size preset.", **fv)
    flags.DEFINE_string("out", None, "Corpus directory to write.", **fv)
    flags.DEFINE_integer("seed", 0, "Random seed (same seed: byte-identical corpus).", **fv)
    flags.DEFINE_bool("overwrite", False, "Replace the corpus in a non-empty --out.", **fv)
    flags.mark_flag_as_required("out", flag_values=flag_values)


def generate_from_flags(fv: flags.FlagValues) -> pathlib.Path:
    """Generates the corpus the flags (from `define_flags`) describe and prints a summary.

    Raises:
      UserError: --out is a file, or a non-empty directory without --overwrite.
    """
    out_dir = pathlib.Path(fv.out)
    try:
        out = generate_corpus(out_dir, fv.preset, fv.seed, fv.overwrite, progress=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise UserError(str(err), hint="choose a new --out, or pass --overwrite") from err
    truth = json.loads((out / "ground_truth.json").read_text())
    total_s = sum(u["duration_s"] for u in truth["utterances"].values())
    print(
        f"wrote {len(truth['utterances'])} utterances ({total_s / 60.0:.1f} min) to {out}; "
        f"suggested test_a_seconds = {truth['test_a_seconds']}"
    )
    return out


def main(argv: Sequence[str]) -> None:
    """Entry point under `papt_jax.cli.run` (flags already parsed into `flags.FLAGS`)."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}", "run with --help")
    generate_from_flags(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
