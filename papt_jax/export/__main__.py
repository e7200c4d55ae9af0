"""Export a finished run for prediction: a papt_jax folder, ONNX, or StableHLO.

  python -m papt_jax.export --workdir=runs/demo --out=models/demo
  python -m papt_jax.export --workdir=runs/demo --out=models/demo --to_hf --overwrite
  python -m papt_jax.export --workdir=runs/demo --out=models/demo_onnx --format=onnx
  python -m papt_jax.export --workdir=runs/demo --out=models/demo_jax --format=stablehlo \
      --profile=alice.json

`--format=folder` (the default) holds both regressors, PLDC's training-speaker statistics, the
original encoder for enrolling new speakers, the config, speakers.json and a README.md model
card, for `python -m papt_jax.predict --export=DIR`; `--to_hf` adds Hugging Face HuBERT
directories under `hf/`. `--format=onnx` and `--format=stablehlo` write the whole predictor as
graphs that run without papt_jax (`predictor.onnx`/`head.onnx`, or `predictor.jax`/`head.jax`
with `weights.npz`), `model.json` and `pldc.json`; the speaker is an input unless
`--speaker` or `--profile` folds one in. ONNX needs the optional `export` packages.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags, logging

from papt_jax import cli
from papt_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's workdir.", required=True)
_OUT = flags.DEFINE_string("out", None, "The folder to write.", required=True)
_FORMAT = flags.DEFINE_enum(
    "format", "folder", ["folder", "onnx", "stablehlo"], "What to write (see --help)."
)
_TO_HF = flags.DEFINE_bool("to_hf", False, "Also write the encoders as Hugging Face folders.")
_SPEAKER = flags.DEFINE_string(
    "speaker", None, "onnx/stablehlo: fold in this training speaker's embedding."
)
_PROFILE = flags.DEFINE_string(
    "profile", None, "onnx/stablehlo: fold in this saved profile's speaker and PLDC numbers."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an earlier export at --out.")


def _check_flags() -> None:
    portable = _FORMAT.value != "folder"
    if _TO_HF.value and portable:
        raise UserError("--to_hf belongs to --format=folder")
    if (_SPEAKER.value or _PROFILE.value) and not portable:
        raise UserError(
            "--speaker and --profile fold a speaker into --format=onnx or stablehlo",
            hint="a folder export keeps every speaker: python -m papt_jax.predict "
            "--export=DIR --speaker=ID",
        )
    if _SPEAKER.value and _PROFILE.value:
        raise UserError("give at most one of --speaker and --profile")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}", hint="flags only; see --help")
    _check_flags()
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every array it writes at INFO
    from papt_jax.export.bundle import check_out, write_bundle
    from papt_jax.predict import assets as assets_lib

    # Before the slow part.
    check_out(Path(_OUT.value).absolute(), _OVERWRITE.value, Path(_WORKDIR.value).absolute())
    if _FORMAT.value == "onnx":
        from papt_jax.export import onnx_export

        onnx_export.require()
    assets = assets_lib.from_workdir(_WORKDIR.value)
    if _FORMAT.value == "folder":
        out = write_bundle(assets, _OUT.value, to_hf=_TO_HF.value, overwrite=_OVERWRITE.value)
    else:
        from papt_jax.export.portable import write_portable

        out = write_portable(
            assets,
            _OUT.value,
            _FORMAT.value,
            speaker=_SPEAKER.value,
            profile=_PROFILE.value,
            overwrite=_OVERWRITE.value,
        )
    print(f"exported model {assets.model_id} ({_FORMAT.value}) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
