"""Runs named on the comparison command line: their summaries, seeds and per-utterance results.

A RUN argument is one of

* a run's workdir, its `report/` folder or a `summary.json` (one seed), or
* `NAME=DIR1+DIR2+...`: one system run with several seeds, each DIR as above; NAME is the
  system's row label (it replaces the runs' own `config.name`).

The per-utterance predictions a paired bootstrap needs are the report's
`<split>_<dimension>_predictions.csv`, found next to each `summary.json`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from papt_jax import significance
from papt_jax.eval.results import EvalResult, ReportError, load_summary
from papt_jax.pldc import MODES


@dataclasses.dataclass(frozen=True)
class Run:
    """One system: a name and one summary (and report folder) per seed.

    Attributes:
      name: the row label.
      summaries: one summary dict per seed, in command-line order.
      report_dirs: the folder holding each seed's `summary.json` and per-utterance CSVs.
    """

    name: str
    summaries: tuple[dict, ...]
    report_dirs: tuple[Path, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.summaries)


def find_summary(path: str | Path) -> Path:
    """The `summary.json` one path names: a summary.json, a report/ folder or a workdir.

    Raises:
      ReportError: the path does not exist, or the folder holds no summary.
    """
    path = Path(path)
    if not path.exists():
        raise ReportError(
            f"{path}: no such file or folder (give a summary.json, a run's report/ folder or "
            "its workdir)"
        )
    if path.is_file():
        return path
    for candidate in (path / "summary.json", path / "report" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise ReportError(
        f"no results found in {path} (neither summary.json nor report/summary.json)",
        hint="run the pipeline's report stage for that run first",
    )


def parse_run(arg: str) -> Run:
    """A `Run` from one command-line argument (see the module docstring)."""
    name, eq, dirs = arg.partition("=")
    if not eq:
        path = find_summary(arg)
        summary = load_summary(path)
        return Run(summary["system"], (summary,), (path.parent,))
    parts = [d for d in dirs.split("+") if d]
    if not name or not parts:
        raise ReportError(f"{arg!r}: expected NAME=DIR1+DIR2+... with a name and a folder")
    paths = [find_summary(d) for d in parts]
    summaries = tuple(dict(load_summary(p), system=name) for p in paths)
    _check_same_shape(name, summaries, paths)
    return Run(name, summaries, tuple(p.parent for p in paths))


def _shape(summary: Mapping) -> set[tuple[str, str, str]]:
    return {
        (split, dim, variant)
        for split, dims in summary["splits"].items()
        for dim, entry in dims.items()
        for variant in entry
        if variant in ("system", *MODES)
    }


def _check_same_shape(name: str, summaries: Sequence[Mapping], paths: Sequence[Path]) -> None:
    first = _shape(summaries[0])
    for summary, path in zip(summaries[1:], paths[1:], strict=True):
        if _shape(summary) != first:
            diff = sorted(first ^ _shape(summary))[:3]
            raise ReportError(
                f"the seeds of {name} report different results: {paths[0]} and {path} differ "
                f"in {diff}",
                hint="give only runs of the same experiment, differing in the seed",
            )


def _mean_std(values: Sequence) -> tuple[float | None, float | None]:
    """Mean and sample std over seeds; (None, None) if a seed has no value."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None, None
    summary = significance.seed_summary(values)
    return summary.mean, summary.std


def merged_summary(run: Run) -> dict:
    """A summary whose metrics are means over seeds, with "*_seed_std" and "n_seeds" added.

    One seed: the summary itself. Several: for every split, dimension and variant, "o_ccc"
    and "a_ccc" are seed means, "o_ccc_seed_std" and "a_ccc_seed_std" their sample stds
    (ddof 1), and "a_ccc_std" (spread across speakers) the seed mean of that spread.
    """
    if run.n_seeds == 1:
        return dict(run.summaries[0], system=run.name)
    splits: dict[str, dict] = {}
    for split, dim, variant in sorted(_shape(run.summaries[0])):
        entries = [s["splits"][split][dim][variant] for s in run.summaries]
        merged = {"n_seeds": run.n_seeds}
        for metric in ("o_ccc", "a_ccc"):
            merged[metric], merged[f"{metric}_seed_std"] = _mean_std([e[metric] for e in entries])
        merged["a_ccc_std"], _ = _mean_std([e["a_ccc_std"] for e in entries])
        splits.setdefault(split, {}).setdefault(dim, {})[variant] = merged
    return {"system": run.name, "splits": splits}


def load_predictions(report_dir: Path, split: str, dimension: str) -> EvalResult:
    """The per-utterance result of one seed, from its report's predictions CSV.

    Raises:
      ReportError: the CSV is missing or malformed.
    """
    path = Path(report_dir) / f"{split}_{dimension}_predictions.csv"
    if not path.is_file():
        raise ReportError(
            f"{path} is missing: significance needs each run's per-utterance predictions next "
            "to its summary.json",
            hint="give the run's workdir or report/ folder, or rerun its report stage",
        )
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError("no rows")
        column = lambda name: [row[name] for row in rows]  # noqa: E731
        calibrated = {m: column(f"prediction_{m}") for m in MODES if f"prediction_{m}" in rows[0]}
        return EvalResult(
            dimension,
            split,
            column("key"),
            column("speaker"),
            np.asarray(column("label"), float),
            np.asarray(column("prediction"), float),
            {m: np.asarray(v, float) for m, v in calibrated.items()},
        )
    except (OSError, KeyError, ValueError) as e:
        raise ReportError(f"{path}: not a readable predictions file ({e})") from e
