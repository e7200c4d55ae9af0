"""`--format onnx` and `--format stablehlo`: the predictor for use without papt_jax.

The folder holds the format's graphs (`onnx_export.py`, `stablehlo.py`), `model.json` (the
graphs' inputs and outputs, output scale, dimensions, sample rate, speakers, windowing, the
checks they passed, and the run's config and metrics), `pldc.json` with `pldc_vectors.npz`
(`metadata.py`) and a README.md. It is written under `<out>.partial` and renamed into place
once the graphs have passed their check against JAX; `model.json` is written last.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from papt_jax.errors import UserError
from papt_jax.export import card, metadata
from papt_jax.export.bundle import write_folder
from papt_jax.export.graph import PredictorGraph
from papt_jax.predict.assets import RunAssets
from papt_jax.predict.profiles import ProfileError, SpeakerProfile
from papt_jax.predict.windows import Batching

FORMATS = ("onnx", "stablehlo")


def fold(
    assets: RunAssets, speaker: str | None, profile: str | Path | None
) -> tuple[int | None, str | None, SpeakerProfile | None]:
    """The speaker-table row to fold into the graphs, how to name it, and the profile.

    Args:
      assets: the run.
      speaker: a training speaker's id (speakers.json), or None.
      profile: a saved profile's path, or None.

    Returns:
      (row or None, a description or None, the loaded profile or None).

    Raises:
      UserError: both given, an unknown speaker, or a profile of another model.
    """
    if speaker is not None and profile is not None:
        raise UserError("give at most one of --speaker and --profile")
    if speaker is not None:
        if str(speaker) not in assets.speakers:
            raise UserError(
                f"speaker {speaker!r} is not one of the run's {len(assets.speakers)} speakers",
                hint="speaker ids are those of speakers.json",
            )
        return assets.speakers.index(str(speaker)), f"training speaker {speaker}", None
    if profile is None:
        return None, None, None
    loaded = SpeakerProfile.load(profile)
    if loaded.model_id != assets.model_id:
        raise ProfileError(
            f"profile {loaded.name!r} was made with model {loaded.model_id}, this model is "
            f"{assets.model_id}",
            hint="enroll the speaker again with this model",
        )
    if loaded.speaker_id not in assets.speakers:
        raise ProfileError(f"profile {loaded.name!r} names unknown speaker {loaded.speaker_id}")
    return assets.speakers.index(loaded.speaker_id), loaded.describe(), loaded


def write_portable(
    assets: RunAssets,
    out: str | Path,
    fmt: str,
    *,
    speaker: str | None = None,
    profile: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes `assets` as an `fmt` ('onnx' or 'stablehlo') export folder at `out`.

    Args:
      assets: from `assets.from_workdir` or `assets.from_export`.
      out: the folder to create.
      fmt: one of `FORMATS`.
      speaker: fold this training speaker's embedding into the graphs.
      profile: fold this saved profile's speaker in (and store its PLDC numbers).
      overwrite: replace an earlier export at `out`.

    Returns:
      The folder.

    Raises:
      MissingDependencyError: a package `fmt` needs is missing (checked first).
      ExportCheckError: the written graphs do not reproduce the JAX model.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        from papt_jax.export import onnx_export

        onnx_export.require()
    row, folded, loaded = fold(assets, speaker, profile)
    if row is not None and not any(
        r.encoder_config.speaker_fusion != "none" for r in assets.regressors.values()
    ):
        row, folded = None, None  # no embedding to fold: only the PLDC numbers apply
    graph = PredictorGraph(assets, row)

    def fill(folder: Path) -> None:
        name = assets.config.get("name") or "papt_jax"
        if fmt == "onnx":
            from papt_jax.export import onnx_export

            files, check = onnx_export.write(graph, folder, name)
        else:
            from papt_jax.export import stablehlo

            files, check = stablehlo.write(graph, folder)
        pldc, vectors = metadata.pldc_json(assets, speaker, loaded)
        (folder / metadata.PLDC_FILE).write_text(json.dumps(pldc, indent=1) + "\n")
        np.savez(folder / metadata.VECTORS_FILE, **vectors)
        info = metadata.model_json(assets, graph, fmt, files, check, folded, Batching())
        (folder / "README.md").write_text(card.portable_card(assets, info))
        # Written last: a folder with a model.json is a complete export.
        (folder / metadata.MODEL_FILE).write_text(json.dumps(info, indent=1) + "\n")

    return write_folder(out, overwrite, fill)
