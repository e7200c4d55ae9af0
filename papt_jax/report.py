"""Evaluation reports: CSVs, a JSON summary, markdown tables shaped like the paper's, plots.

Data structures, kept plain on purpose:

* `EvalResult` — one (split, dimension) evaluation: per-utterance keys, speakers, labels,
  predictions and the PLDC-calibrated predictions per mode (`pldc.MODES`).
* A *summary* — the JSON-ready dict `build_summary` returns and `summary.json` holds::

      {"system": "PAPT-FT",
       "splits": {"test-b": {"arousal": {
           "n_utterances": 812, "n_speakers": 41,
           "system": {"o_ccc": .., "a_ccc": .., "a_ccc_std": ..,
                      "n_speakers_used": .., "n_speakers_excluded": ..},
           "mu": {...}, "sigma": {...}, "both": {...}}}}}

  The variant keys are "system" (raw predictions) and each PLDC mode present. NaN values (no
  speaker qualified for A-CCC) are stored as JSON null.

`write_report` writes, per (split, dimension), `{split}_{dimension}_predictions.csv`,
`{split}_{dimension}_per_speaker.csv` and two PNGs, plus `summary.json` and `results.md`.
`comparison_table` / `write_comparison` build the cross-system tables (paper Tables 2 and 3)
from several summaries.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from papt_jax import metrics
from papt_jax.pldc import MODES

SYSTEM = "system"
VARIANTS = (SYSTEM, *MODES)
MODE_LABELS = {"mu": "+ μ shift", "sigma": "+ σ shift", "both": "+ (μ, σ) shift"}
DIMENSIONS = ("arousal", "valence")
MISSING = "–"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


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
        if np.unique(self.keys).size != n:
            raise ValueError(f"{self.split}/{self.dimension}: utterance keys are not unique")

    def variants(self) -> dict[str, np.ndarray]:
        """{"system": predictions, mode: calibrated predictions, ...} in `VARIANTS` order."""
        return {SYSTEM: self.predictions, **self.calibrated}

    @property
    def stem(self) -> str:
        return f"{self.split}_{self.dimension}"


def summarize(result: EvalResult) -> dict:
    """O-CCC and A-CCC (with std and speaker counts) of each variant of one result."""
    out = {
        "n_utterances": int(result.keys.size),
        "n_speakers": int(np.unique(result.speakers).size),
    }
    for variant, preds in result.variants().items():
        mean, std, used, excluded = metrics.average_ccc(preds, result.labels, result.speakers)
        out[variant] = {
            "o_ccc": metrics.overall_ccc(preds, result.labels),
            "a_ccc": _json_float(mean),
            "a_ccc_std": _json_float(std),
            "n_speakers_used": used,
            "n_speakers_excluded": excluded,
        }
    return out


def build_summary(results: Sequence[EvalResult], system: str) -> dict:
    """The summary dict (see the module docstring) of one system's results."""
    splits: dict[str, dict] = {}
    for result in results:
        per_split = splits.setdefault(result.split, {})
        if result.dimension in per_split:
            raise ValueError(f"two results for {result.split}/{result.dimension}")
        per_split[result.dimension] = summarize(result)
    return {"system": system, "splits": splits}


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


# --- CSV files -------------------------------------------------------------------------------


def write_predictions_csv(result: EvalResult, path: str | Path) -> Path:
    """One row per utterance: key, speaker, label, prediction, prediction_<mode>..."""
    path = Path(path)
    header = ["key", "speaker", "label", "prediction"] + [
        f"prediction_{m}" for m in result.calibrated
    ]
    columns = [result.keys, result.speakers, result.labels, result.predictions]
    columns += list(result.calibrated.values())
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in zip(*columns, strict=True):
            writer.writerow([_cell(v) for v in row])
    return path


def per_speaker_rows(result: EvalResult) -> tuple[list[str], list[list]]:
    """Header and rows of the per-speaker table: speaker, n, ccc_system, ccc_<mode>...

    A CCC is NaN where `metrics.per_speaker_ccc` excludes the speaker for that variant.
    """
    per = {
        v: metrics.per_speaker_ccc(p, result.labels, result.speakers)
        for v, p in result.variants().items()
    }
    first = per[SYSTEM]
    header = ["speaker", "n"] + [f"ccc_{v}" for v in per]
    rows = [
        [speaker, int(n)] + [float(per[v].ccc[i]) for v in per]
        for i, (speaker, n) in enumerate(zip(first.speakers, first.counts, strict=True))
    ]
    return header, rows


def write_per_speaker_csv(result: EvalResult, path: str | Path) -> Path:
    """Per-speaker CCCs; excluded speakers are written as `nan` (see `metrics`)."""
    path = Path(path)
    header, rows = per_speaker_rows(result)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[_cell(v) for v in row] for row in rows])
    return path


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return repr(float(value))  # repr round-trips float64 exactly
    return str(value.item() if isinstance(value, np.generic) else value)


# --- Markdown tables -------------------------------------------------------------------------


def format_o(value) -> str:
    """O-CCC cell: `0.740`, or a dash when missing."""
    value = _num(value)
    return MISSING if math.isnan(value) else f"{value:.3f}"


def format_a(mean, std) -> str:
    """A-CCC cell: `0.531 (0.19)` (mean with the std across speakers), or a dash."""
    mean, std = _num(mean), _num(std)
    return MISSING if math.isnan(mean) else f"{mean:.3f} ({std:.2f})"


def _header(dimensions: Sequence[str]) -> list[str]:
    cells = [""]
    for dim in dimensions:
        cells += [f"{dim.capitalize()} O-CCC", f"{dim.capitalize()} A-CCC (std)"]
    return [_md_row(cells), _md_row(["---"] * len(cells))]


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cells(split_summary: Mapping | None, variant: str, dimensions: Sequence[str]) -> list[str]:
    cells = []
    for dim in dimensions:
        entry = (split_summary or {}).get(dim, {}).get(variant)
        if entry is None:
            cells += [MISSING, MISSING]
        else:
            cells += [format_o(entry["o_ccc"]), format_a(entry["a_ccc"], entry["a_ccc_std"])]
    return cells


def results_table(summary: Mapping, split: str, dimensions: Sequence[str] = DIMENSIONS) -> str:
    """Markdown table for one split: rows system, + μ shift, + σ shift, + (μ, σ) shift."""
    split_summary = summary["splits"].get(split)
    if split_summary is None:
        raise KeyError(f"summary of {summary['system']} has no split {split!r}")
    lines = _header(dimensions)
    for variant in VARIANTS:
        label = summary["system"] if variant == SYSTEM else MODE_LABELS[variant]
        lines.append(_md_row([label, *_cells(split_summary, variant, dimensions)]))
    return "\n".join(lines)


def _speaker_note(split_summary: Mapping, dimensions: Sequence[str]) -> str:
    parts = []
    for dim in dimensions:
        entry = split_summary.get(dim)
        if entry:
            s = entry[SYSTEM]
            parts.append(
                f"{dim}: {entry['n_utterances']} utterances, {s['n_speakers_used']} speakers in "
                f"A-CCC, {s['n_speakers_excluded']} excluded"
            )
    return (
        "A-CCC (std) is the mean (population std) of per-speaker CCCs over speakers with at "
        "least 2 utterances and non-constant labels and predictions. " + "; ".join(parts) + "."
    )


def write_results_md(
    summary: Mapping, path: str | Path, dimensions: Sequence[str] = DIMENSIONS
) -> Path:
    """`results.md`: one paper-shaped table per split, with speaker counts under each."""
    path = Path(path)
    lines = [f"# Results: {summary['system']}", ""]
    for split in summary["splits"]:
        lines += [f"## {split}", "", results_table(summary, split, dimensions), ""]
        lines += [_speaker_note(summary["splits"][split], dimensions), ""]
    path.write_text("\n".join(lines))
    return path


def comparison_table(
    summaries: Sequence[Mapping],
    split: str,
    pldc_systems: Sequence[str] | None = None,
    dimensions: Sequence[str] = DIMENSIONS,
) -> str:
    """One table across systems for one split (shaped like the paper's Tables 2 and 3).

    Args:
      summaries: summaries of the systems, in row order (e.g. Vanilla-FT, TAPT-FT, PAPT-FT).
      split: e.g. "test-b" (Table 2) or "test-c" (Table 3, unseen speakers).
      pldc_systems: systems whose PLDC rows ("PAPT-FT + σ shift", ...) follow their own row;
        default: the last system only.
      dimensions: column groups.

    Returns:
      Markdown; a system without this split or dimension gets dashes.
    """
    names = [s["system"] for s in summaries]
    if len(set(names)) != len(names):
        raise ValueError(f"system names repeat: {names}")
    with_pldc = set(names[-1:] if pldc_systems is None else pldc_systems)
    unknown = with_pldc - set(names)
    if unknown:
        raise ValueError(f"pldc_systems {sorted(unknown)} are not among {names}")
    lines = _header(dimensions)
    for summary in summaries:
        split_summary = summary["splits"].get(split)
        lines.append(_md_row([summary["system"], *_cells(split_summary, SYSTEM, dimensions)]))
        if summary["system"] in with_pldc:
            for mode in MODES:
                label = f"{summary['system']} {MODE_LABELS[mode]}"
                lines.append(_md_row([label, *_cells(split_summary, mode, dimensions)]))
    return "\n".join(lines)


def write_comparison(
    summaries: Sequence[Mapping | str | Path],
    path: str | Path,
    splits: Sequence[str] = ("test-b", "test-c"),
    pldc_systems: Sequence[str] | None = None,
) -> Path:
    """Writes the comparison tables of several systems (summaries or summary.json paths)."""
    loaded = [s if isinstance(s, Mapping) else load_summary(s) for s in summaries]
    titles = {"test-b": "test-b (seen speakers, Table 2)", "test-c": "test-c (unseen, Table 3)"}
    lines = ["# Comparison across systems", ""]
    for split in splits:
        lines += [f"## {titles.get(split, split)}", ""]
        lines += [comparison_table(loaded, split, pldc_systems), ""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


# --- JSON ------------------------------------------------------------------------------------


def write_summary_json(summary: Mapping, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path


def load_summary(path: str | Path) -> dict:
    """Reads a `summary.json`, checking it has the expected top-level keys."""
    summary = json.loads(Path(path).read_text())
    if not isinstance(summary, dict) or not {"system", "splits"} <= summary.keys():
        raise ValueError(f"{path} is not a report summary (needs 'system' and 'splits')")
    return summary


# --- Plots -----------------------------------------------------------------------------------


def plot_speaker_ccc(result: EvalResult, path: str | Path) -> Path:
    """Per-speaker CCC before (x) vs after (y) each PLDC mode, with the diagonal."""
    path = Path(path)
    modes = list(result.calibrated) or [SYSTEM]
    before = metrics.per_speaker_ccc(result.predictions, result.labels, result.speakers).ccc
    fig = Figure(figsize=(4.2 * len(modes), 4.2), layout="constrained")
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    for ax, mode in zip(axes, modes, strict=True):
        after = metrics.per_speaker_ccc(result.variants()[mode], result.labels, result.speakers).ccc
        both = ~(np.isnan(before) | np.isnan(after))
        lo = min(-0.1, float(np.nanmin([before, after], initial=0.0)) - 0.05)
        ax.plot([lo, 1], [lo, 1], color="grey", lw=1, ls="--")
        ax.scatter(before[both], after[both], s=14, alpha=0.7)
        better = int((after[both] > before[both]).sum())
        label = MODE_LABELS.get(mode, mode)
        ax.set_title(f"{label}: {better}/{int(both.sum())} speakers improve")
        ax.set_xlabel("per-speaker CCC, system")
        ax.set_ylabel(f"per-speaker CCC, {label}")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_aspect("equal")
    fig.suptitle(f"{result.split} {result.dimension}: per-speaker CCC before vs after PLDC")
    fig.savefig(path, dpi=100)
    return path


def plot_predictions(result: EvalResult, path: str | Path) -> Path:
    """Predicted (y) vs true (x) per variant, with the diagonal and the O-CCC in the title."""
    path = Path(path)
    variants = result.variants()
    fig = Figure(figsize=(4.2 * len(variants), 4.2), layout="constrained")
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    values = np.concatenate([result.labels, *variants.values()])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * max(hi - lo, 1e-6)
    for ax, (variant, preds) in zip(axes, variants.items(), strict=True):
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, ls="--")
        ax.scatter(result.labels, preds, s=6, alpha=0.4)
        label = "system" if variant == SYSTEM else MODE_LABELS[variant]
        ax.set_title(f"{label}: O-CCC {metrics.overall_ccc(preds, result.labels):.3f}")
        ax.set_xlabel(f"true {result.dimension}")
        ax.set_ylabel(f"predicted {result.dimension}")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
    fig.suptitle(f"{result.split} {result.dimension}: predicted vs true")
    fig.savefig(path, dpi=100)
    return path


# --- Everything ------------------------------------------------------------------------------


def write_report(
    results: Sequence[EvalResult], out_dir: str | Path, system: str, plots: bool = True
) -> dict[str, Path]:
    """Writes every report file of one system into `out_dir` (created if needed).

    Args:
      results: one `EvalResult` per (split, dimension).
      out_dir: destination folder.
      system: system name for the tables, e.g. "PAPT-FT".
      plots: also write the two PNGs per result.

    Returns:
      {name: path} of the files written, e.g. "summary", "results_md",
      "test-b_arousal_predictions", "test-b_arousal_per_speaker", "..._speaker_ccc_png".
    """
    if not results:
        raise ValueError("no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(results, system)
    written = {
        "summary": write_summary_json(summary, out / "summary.json"),
        "results_md": write_results_md(summary, out / "results.md"),
    }
    for r in results:
        written[f"{r.stem}_predictions"] = write_predictions_csv(
            r, out / f"{r.stem}_predictions.csv"
        )
        written[f"{r.stem}_per_speaker"] = write_per_speaker_csv(
            r, out / f"{r.stem}_per_speaker.csv"
        )
        if plots:
            written[f"{r.stem}_speaker_ccc_png"] = plot_speaker_ccc(
                r, out / f"{r.stem}_speaker_ccc.png"
            )
            written[f"{r.stem}_pred_vs_true_png"] = plot_predictions(
                r, out / f"{r.stem}_pred_vs_true.png"
            )
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m papt_jax.report --out FILE SUMMARY.json [SUMMARY.json ...]`.

    Writes the across-systems comparison (paper Tables 2 and 3 shape) and prints it.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("summaries", nargs="+", help="summary.json files, in row order")
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument(
        "--pldc_systems", default="", help="comma-separated systems with PLDC rows (default: last)"
    )
    args = parser.parse_args(argv)
    missing = [p for p in args.summaries if not Path(p).is_file()]
    if missing:
        parser.error(f"no such summary file(s): {missing}")
    pldc_systems = [s for s in args.pldc_systems.split(",") if s] or None
    path = write_comparison(args.summaries, args.out, pldc_systems=pldc_systems)
    print(path.read_text())


if __name__ == "__main__":
    main()
