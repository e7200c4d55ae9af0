"""Report text: per-utterance and per-speaker CSVs and markdown tables shaped like the paper's."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from papt_jax import metrics
from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.eval.results import MISSING, MODE_LABELS, SYSTEM, VARIANTS, EvalResult


def _num(value) -> float:
    return float("nan") if value is None else float(value)


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


def format_o(value) -> str:
    """O-CCC cell: `0.740`, or a dash when missing."""
    value = _num(value)
    return MISSING if math.isnan(value) else f"{value:.3f}"


def format_a(mean, std) -> str:
    """A-CCC cell: `0.531 (0.19)` (mean with the std across speakers), or a dash."""
    mean, std = _num(mean), _num(std)
    return MISSING if math.isnan(mean) else f"{mean:.3f} ({std:.2f})"


def table_header(dimensions: Sequence[str]) -> list[str]:
    cells = [""]
    for dim in dimensions:
        cells += [f"{dim.capitalize()} O-CCC", f"{dim.capitalize()} A-CCC (std)"]
    return [table_row(cells), table_row(["---"] * len(cells))]


def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def variant_cells(
    split_summary: Mapping | None, variant: str, dimensions: Sequence[str]
) -> list[str]:
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
    lines = table_header(dimensions)
    for variant in VARIANTS:
        label = summary["system"] if variant == SYSTEM else MODE_LABELS[variant]
        lines.append(table_row([label, *variant_cells(split_summary, variant, dimensions)]))
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
        "least 2 utterances (constant labels or predictions give a speaker CCC 0). "
        + "; ".join(parts)
        + "."
    )


def write_results_md(
    summary: Mapping, path: str | Path, dimensions: Sequence[str] = DIMENSIONS
) -> Path:
    """`results.md`: one paper-shaped table per split, with speaker counts under each."""
    path = Path(path)
    lines = [f"# Results: {summary['system']}", ""]
    run = summary.get("run") or {}
    if run:
        lines += [", ".join(f"{k} = {v}" for k, v in run.items()), ""]
    for split in summary["splits"]:
        lines += [f"## {split}", "", results_table(summary, split, dimensions), ""]
        lines += [_speaker_note(summary["splits"][split], dimensions), ""]
    path.write_text("\n".join(lines))
    return path
