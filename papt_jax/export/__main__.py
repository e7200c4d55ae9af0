"""Export a finished run as one folder that `python -m papt_jax.predict --export=DIR` uses.

  python -m papt_jax.export --workdir=runs/demo --out=models/demo
  python -m papt_jax.export --workdir=runs/demo --out=models/demo --to_hf --overwrite

The folder holds both regressors, PLDC's training-speaker statistics, the original encoder
for enrolling new speakers, the config, speakers.json and a README.md model card; `--to_hf`
adds Hugging Face HuBERT directories under `hf/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags, logging

from papt_jax import cli
from papt_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's workdir.", required=True)
_OUT = flags.DEFINE_string("out", None, "The folder to write.", required=True)
_TO_HF = flags.DEFINE_bool("to_hf", False, "Also write the encoders as Hugging Face folders.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier export at --out.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}", hint="flags only; see --help")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every array it writes at INFO
    from papt_jax.export.bundle import check_out, write_bundle
    from papt_jax.predict import assets as assets_lib

    # Before the slow part.
    check_out(Path(_OUT.value).absolute(), _OVERWRITE.value, Path(_WORKDIR.value).absolute())
    assets = assets_lib.from_workdir(_WORKDIR.value)
    out = write_bundle(assets, _OUT.value, to_hf=_TO_HF.value, overwrite=_OVERWRITE.value)
    print(f"exported model {assets.model_id} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
