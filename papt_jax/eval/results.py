"""Evaluation results: the per-utterance result type, its summary and their files.

* `EvalResult`: one (split, dimension) evaluation: per-utterance keys, speakers, labels,
  predictions and the PLDC-calibrated predictions per mode (`pldc.MODES`); saved as one
  `.npz` by `save_result` / `load_result`.
* A *summary*: the JSON-ready dict `build_summary` returns and `summary.json` holds::

      {"system": "PAPT-FT",
       "splits": {"test-b": {"arousal": {
           "n_utterances": 812, "n_speakers": 41,
           "system": {"o_ccc": .., "a_ccc": .., "a_ccc_std": ..,
                      "n_speakers_used": .., "n_speakers_excluded": ..},
           "mu": {...}, "sigma": {...}, "both": {...},
           "analysis": {...}}}}}

  The variant keys are "system" (raw predictions) and each PLDC mode present; "analysis"
  (when the report had it) holds the PLDC oracle, retrieval diagnostic and speaker shift of
  `eval.analysis.summary_entry`. NaN values (no speaker qualified for A-CCC, an undefined
  correlation) are stored as JSON null.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from papt_jax import metrics
from papt_jax.errors import UserError
from papt_jax.pldc import MODES

SYSTEM = "system"

VARIANTS = (SYSTEM, *MODES)

MODE_LABELS = {"mu": "+ μ shift", "sigma": "+ σ shift", "both": "+ (μ, σ) shift"}

MISSING = "–"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def speaker_order(ids) -> list:
    """The distinct speaker ids in reading order: numerically when every id is a whole number
    (2 before 10, as MSP-Podcast's numeric ids read), else as strings.

    Args:
      ids: speaker ids of any type (ints, numeric strings, names), repeats allowed.

    Returns:
      Each distinct id once, in its original type.
    """
    unique = list(dict.fromkeys(np.asarray(ids).reshape(-1).tolist()))
    texts = [str(i) for i in unique]
    if texts and all(re.fullmatch(r"-?[0-9]+", t) for t in texts):
        return [i for _, i in sorted(zip((int(t) for t in texts), unique, strict=True))]
    return [i for _, i in sorted(zip(texts, unique, strict=True))]


class ReportError(UserError, ValueError):
    """A result or summary file that cannot be reported (missing, unreadable, inconsistent)."""


@dataclasses.dataclass
class EvalResult:
    """Predictions of one system on one split for one emotion dimension.

    Attributes:
      dimension: e.g. "arousal" or "valence".
      split: e.g. "test-b" or "test-c".
      keys: (N,) unique utterance keys.
      speakers: (N,) speaker id of each utterance (ints or strings).
      labels: (N,) ground truth.
      predictions: (N,) raw model outputs.
      calibrated: {mode: (N,) PLDC output} for any subset of `pldc.MODES`.
    """

    dimension: str
    split: str
    keys: np.ndarray
    speakers: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    calibrated: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("dimension", "split"):
            if not _SAFE_NAME.match(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not usable in a file name")
        self.keys = np.asarray(self.keys).astype(str).reshape(-1)
        self.speakers = np.asarray(self.speakers).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.float64).reshape(-1)
        self.predictions = np.asarray(self.predictions, dtype=np.float64).reshape(-1)
        unknown = set(self.calibrated) - set(MODES)
        if unknown:
            raise ValueError(f"unknown PLDC modes {sorted(unknown)}; expected a subset of {MODES}")
        # Keep MODES order so every table and CSV lists the variants the same way.
        self.calibrated = {
            m: np.asarray(self.calibrated[m], dtype=np.float64).reshape(-1)
            for m in MODES
            if m in self.calibrated
        }
        n = self.keys.size
        arrays = {"speakers": self.speakers, "labels": self.labels, "predictions": self.predictions}
        arrays.update({f"calibrated[{m}]": v for m, v in self.calibrated.items()})
        for name, value in arrays.items():
            if value.size != n:
                raise ValueError(f"{name} has {value.size} entries, keys has {n}")
            if name != "speakers" and not np.isfinite(value).all():
                bad = np.flatnonzero(~np.isfinite(value))
                raise ValueError(
                    f"{self.split}/{self.dimension}: {name} has {bad.size} non-finite values "
                    f"(first at utterance {str(self.keys[bad[0]])!r})"
                )
        if np.unique(self.keys).size != n:
            raise ValueError(f"{self.split}/{self.dimension}: utterance keys are not unique")

    def variants(self) -> dict[str, np.ndarray]:
        """{"system": predictions, mode: calibrated predictions, ...} in `VARIANTS` order."""
        return {SYSTEM: self.predictions, **self.calibrated}

    @property
    def stem(self) -> str:
        return f"{self.split}_{self.dimension}"


def variant_metrics(predictions, labels, speakers) -> dict:
    """{"o_ccc", "a_ccc", "a_ccc_std", "n_speakers_used", "n_speakers_excluded"} of one array."""
    mean, std, used, excluded = metrics.average_ccc(predictions, labels, speakers)
    return {
        "o_ccc": _json_float(metrics.overall_ccc(predictions, labels)),
        "a_ccc": _json_float(mean),
        "a_ccc_std": _json_float(std),
        "n_speakers_used": used,
        "n_speakers_excluded": excluded,
    }


def summarize(result: EvalResult) -> dict:
    """O-CCC and A-CCC (with std and speaker counts) of each variant of one result."""
    out = {
        "n_utterances": int(result.keys.size),
        "n_speakers": int(np.unique(result.speakers).size),
    }
    for variant, preds in result.variants().items():
        out[variant] = variant_metrics(preds, result.labels, result.speakers)
    return out


def build_summary(
    results: Sequence[EvalResult],
    system: str,
    run: Mapping | None = None,
    analyses: Mapping[str, Mapping] | None = None,
) -> dict:
    """The summary dict (see the module docstring) of one system's results.

    Args:
      results: one per (split, dimension).
      system: the system's name in tables.
      run: facts about the run that produced them (e.g. PLDC `pldc_k`, the evaluation's
        `fingerprint`), stored under "run" so the numbers never lose their settings.
      analyses: {result stem: `analysis.summary_entry`}, stored as the entry's "analysis".
    """
    splits: dict[str, dict] = {}
    for result in results:
        per_split = splits.setdefault(result.split, {})
        if result.dimension in per_split:
            raise ValueError(f"two results for {result.split}/{result.dimension}")
        per_split[result.dimension] = summarize(result)
        if analyses is not None and result.stem in analyses:
            per_split[result.dimension]["analysis"] = dict(analyses[result.stem])
    return {"system": system, "run": dict(run or {}), "splits": splits}


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def write_summary_json(summary: Mapping, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path


def load_summary(path: str | Path) -> dict:
    """Reads a `summary.json`, checking it has the expected top-level keys.

    Raises:
      ReportError: the file cannot be read, is not JSON, or is not a report summary.
    """
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"cannot read the result file {path}: {e}") from e
    if not isinstance(summary, dict) or not {"system", "splits"} <= summary.keys():
        raise ReportError(f"{path} is not a report summary (needs 'system' and 'splits')")
    if not isinstance(summary["splits"], dict):
        raise ReportError(f"{path}: 'splits' is not a mapping of split names")
    return summary


def save_result(result: EvalResult, path: str | Path) -> Path:
    """Writes one result as an `.npz` of plain arrays (no pickles)."""
    path = Path(path)
    np.savez(
        path,
        dimension=result.dimension,
        split=result.split,
        keys=result.keys.astype(str),
        speakers=result.speakers.astype(str),
        labels=result.labels,
        predictions=result.predictions,
        **{f"calibrated_{m}": v for m, v in result.calibrated.items()},
    )
    return path


def load_result(path: str | Path) -> EvalResult:
    """Reads a result written by `save_result`.

    Raises:
      ReportError: the file is missing or not a readable result.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            calibrated = {
                k[len("calibrated_") :]: z[k] for k in z.files if k.startswith("calibrated_")
            }
            return EvalResult(
                str(z["dimension"]),
                str(z["split"]),
                z["keys"],
                z["speakers"],
                z["labels"],
                z["predictions"],
                calibrated,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ReportError(f"{path}: not a readable evaluation result ({e})") from e
