"""Report text: per-utterance and per-speaker CSVs and markdown tables shaped like the paper's."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from papt_jax import metrics
from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.eval.results import (
    MISSING,
    MODE_LABELS,
    SYSTEM,
    VARIANTS,
    EvalResult,
    speaker_order,
)
from papt_jax.pldc import MODES

ORACLE_LABEL = "oracle (uses test labels)"

# Paper §3, arousal on MSP-Podcast: Pearson r of feature shift / label shift with per-speaker
# performance, and of the two shifts with each other.
PAPER_SHIFT_R = {
    "feature_kl_vs_ccc": -0.714,
    "label_kl_vs_ccc": -0.502,
    "feature_kl_vs_label_kl": 0.285,
}


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
            writer.writerow([cell_text(v) for v in row])
    return path


def per_speaker_rows(result: EvalResult) -> tuple[list[str], list[list]]:
    """Header and rows of the per-speaker table: speaker, n, ccc_system, ccc_<mode>...

    One row per speaker in reading order (`results.speaker_order`, as the figures' legends).
    A CCC is NaN where `metrics.per_speaker_ccc` excludes the speaker for that variant.
    """
    per = {
        v: metrics.per_speaker_ccc(p, result.labels, result.speakers)
        for v, p in result.variants().items()
    }
    first = per[SYSTEM]
    header = ["speaker", "n"] + [f"ccc_{v}" for v in per]
    position = {str(s): i for i, s in enumerate(first.speakers)}
    rows = [
        [first.speakers[i], int(first.counts[i])] + [float(per[v].ccc[i]) for v in per]
        for i in (position[str(s)] for s in speaker_order(first.speakers))
    ]
    return header, rows


def write_per_speaker_csv(result: EvalResult, path: str | Path) -> Path:
    """Per-speaker CCCs; excluded speakers are written as `nan` (see `metrics`)."""
    path = Path(path)
    header, rows = per_speaker_rows(result)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[cell_text(v) for v in row] for row in rows])
    return path


def cell_text(value) -> str:
    """A CSV cell: floats exactly and as short as possible, NumPy scalars as Python values.

    Predictions and labels are float32 values held in float64 (3.7578999996185303 is the
    float32 nearest 3.7579); such a value is written as the shortest decimal that reads back
    to the same float32 (3.7579). Any other float is written as the shortest decimal that
    reads back to the same float64 (`repr`).
    """
    if isinstance(value, float | np.floating):
        value = float(value)
        single = np.float32(value)
        if math.isfinite(value) and float(single) == value:
            return str(single)
        return repr(value)
    return str(value.item() if isinstance(value, np.generic) else value)


def format_o(value, seed_std=None) -> str:
    """O-CCC cell: `0.740`, `0.740 ± 0.012` (mean ± std over seeds), or a dash when missing."""
    value = _num(value)
    if math.isnan(value):
        return MISSING
    return f"{value:.3f}" if seed_std is None else f"{value:.3f} ± {float(seed_std):.3f}"


def format_a(mean, std, seed_std=None) -> str:
    """A-CCC cell: `0.531 (0.19)` (mean with the std across speakers), `0.531 ± 0.012 (0.19)`
    with the std over seeds, or a dash."""
    mean, std = _num(mean), _num(std)
    if math.isnan(mean):
        return MISSING
    seeds = "" if seed_std is None else f" ± {float(seed_std):.3f}"
    return f"{mean:.3f}{seeds} ({std:.2f})"


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
    """O-CCC and A-CCC cells of one variant per dimension (dashes where it is missing).

    Args:
      split_summary: dimension -> {variant: metrics}: a summary's split, or the oracle
        entries of one.
      variant: the key of the metrics wanted.
      dimensions: column groups.
    """
    cells = []
    for dim in dimensions:
        entry = ((split_summary or {}).get(dim) or {}).get(variant)
        if entry is None:
            cells += [MISSING, MISSING]
        else:
            cells += [
                format_o(entry["o_ccc"], entry.get("o_ccc_seed_std")),
                format_a(entry["a_ccc"], entry["a_ccc_std"], entry.get("a_ccc_seed_std")),
            ]
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
    oracle = {
        dim: ((entry.get("analysis") or {}).get("oracle") or {})
        for dim, entry in split_summary.items()
    }
    for mode in MODES:
        if any(mode in o for o in oracle.values()):
            label = f"{ORACLE_LABEL} {MODE_LABELS[mode]}"
            lines.append(table_row([label, *variant_cells(oracle, mode, dimensions)]))
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
    """`results.md`: per split, the paper-shaped table (with the PLDC oracle rows), speaker
    counts, the PLDC retrieval diagnostic and the speaker-shift analysis (`analysis_sections`)."""
    path = Path(path)
    lines = [f"# Results: {summary['system']}", ""]
    run = summary.get("run") or {}
    if run:
        lines += [", ".join(f"{k} = {v}" for k, v in run.items()), ""]
    for split in summary["splits"]:
        split_summary = summary["splits"][split]
        table = results_table(summary, split, dimensions)
        lines += [f"## {split}", "", table, ""]
        lines += [_speaker_note(split_summary, dimensions), ""]
        lines += analysis_sections(split, split_summary, dimensions)
    if any(ORACLE_LABEL in line for line in lines):
        lines += ["## How to read the analyses", "", ORACLE_NOTE, "", RETRIEVAL_NOTE, ""]
        lines += [SHIFT_NOTE, ""]
    path.write_text("\n".join(lines))
    return path


# --- analyses (PLDC oracle, retrieval diagnostic, speaker shift) --------------------------------

ORACLE_NOTE = (
    "**Oracle rows.** The oracle rows calibrate each test speaker's predictions to the "
    "speaker's own label mean and std (PLDC's equation with the true statistics). They use the "
    "test labels, so they are no method: they show how much PLDC could gain at most if "
    "retrieval were perfect."
)


def _analysis(split_summary: Mapping, dim: str) -> Mapping | None:
    return (split_summary.get(dim) or {}).get("analysis")


def _num_cell(value, digits: int = 3) -> str:
    return MISSING if value is None or math.isnan(float(value)) else f"{float(value):.{digits}f}"


def retrieval_table(split_summary: Mapping, dimensions: Sequence[str]) -> str | None:
    """Per dimension, one row for μ and one for σ: how close PLDC's retrieved targets come.

    Columns: speakers compared, Pearson r between retrieved and own value, and the mean
    absolute error of the retrieved value, of the average over all training speakers and of
    the training set's value. None when no dimension has a retrieval diagnostic.
    """
    rows = []
    for dim in dimensions:
        entry = (_analysis(split_summary, dim) or {}).get("retrieval")
        if entry is None:
            continue
        for stat, symbol in (("label_mean", "μ"), ("label_std", "σ")):
            values = entry[stat]
            rows.append(
                table_row(
                    [
                        f"{dim} {symbol}",
                        str(entry["n_speakers"]),
                        _num_cell(values["pearson_r_retrieved_vs_own"], 2),
                        _num_cell(values["mae_retrieved"]),
                        _num_cell(values["mae_all_speakers"]),
                        _num_cell(values["mae_training_set"]),
                    ]
                )
            )
    if not rows:
        return None
    header = [
        "",
        "speakers",
        "r (retrieved, own)",
        "MAE retrieved",
        "MAE all-speaker average",
        "MAE training set",
    ]
    return "\n".join([table_row(header), table_row(["---"] * len(header)), *rows])


def _r_cell(corr: Mapping) -> str:
    if corr["r"] is None:
        return f"{MISSING} (n = {corr['n']})"
    p = corr["p"]
    p_text = "p < 0.001" if p is not None and p < 0.001 else f"p = {_num_cell(p)}"
    return f"{corr['r']:.2f} ({p_text})"


def shift_table(split_summary: Mapping, dimensions: Sequence[str]) -> str | None:
    """Per dimension: speakers used, median KLs and the three Pearson correlations."""
    rows = []
    for dim in dimensions:
        entry = (_analysis(split_summary, dim) or {}).get("shift")
        if entry is None:
            continue
        corr = entry["correlations"]
        rows.append(
            table_row(
                [
                    dim,
                    f"{entry['n_speakers_used']} of {entry['n_speakers']}",
                    _num_cell(entry["feature_kl_median"], 2),
                    _num_cell(entry["label_kl_median"], 2),
                    *(_r_cell(corr[name]) for name in PAPER_SHIFT_R),
                ]
            )
        )
    if not rows:
        return None
    header = [
        "",
        "speakers used",
        "median feature KL",
        "median label KL",
        "r (feature KL, CCC)",
        "r (label KL, CCC)",
        "r (feature KL, label KL)",
    ]
    return "\n".join([table_row(header), table_row(["---"] * len(header)), *rows])


RETRIEVAL_NOTE = (
    "**PLDC retrieval diagnostic** (uses test labels). PLDC retrieved the k most similar "
    "training speakers by the cosine similarity of speaker vectors (means of mean-pooled "
    "vectors: the fine-tuned model's for seen speakers, the original encoder's for test-c); μ̄ "
    "and σ̄ are the averages of their label means and stds, recomputed exactly as PLDC computed"
    " them (checked against the calibrated predictions). Each row compares them, across test "
    "speakers with at least 2 utterances, with each speaker's own label mean μ or std σ: the "
    "Pearson r, and the mean absolute error of the retrieved value, of the average over all "
    "training speakers (PLDC with k = every speaker: no similarity at all) and of the training "
    "set's mean or std. Retrieval adds something only where its MAE is below the all-speaker "
    "average's. When the oracle rows lie far above PLDC's and retrieval does not beat the "
    "all-speaker average, retrieval, not calibration, limits PLDC."
)

SHIFT_NOTE = (
    "**Feature and label shift** (paper §3). For every test speaker, KL(speaker ‖ training set)"
    " in nats of its feature distribution and of its label distribution, and their Pearson "
    "correlations (with two-sided p) with the speaker's CCC (uncalibrated predictions) over "
    "speakers with at least 2 utterances and a valid CCC. Features: the evaluated model's "
    "mean-pooled vectors (in every split, for test-c with the proxy speaker's embedding: what "
    "the regression head receives), z-normalised with the training set's statistics, projected "
    "on its first 8 principal components and whitened. Densities: one Gaussian with diagonal "
    "covariance per distribution (labels: a 1-D Gaussian), maximum-likelihood variances floored"
    " at 1e-3 of the training variance. The paper reports, for arousal on MSP-Podcast, r = "
    "-0.714 (feature KL, performance), -0.502 (label KL, performance) and 0.285 (feature KL, "
    "label KL). A p-value above 0.05 means the data cannot tell the correlation from none."
)


def _missing_note(split_summary: Mapping, dimensions: Sequence[str], name: str) -> list[str]:
    notes = []
    for dim in dimensions:
        analysis = _analysis(split_summary, dim)
        if analysis is None:
            continue
        reason = (analysis.get("missing") or {}).get(name)
        if reason:
            notes.append(f"{dim}: not computed: {reason}")
    return ["; ".join(notes) + ".", ""] if notes else []


def analysis_sections(split: str, split_summary: Mapping, dimensions: Sequence[str]) -> list[str]:
    """Markdown lines of the retrieval diagnostic and shift sections of one split."""
    if not any(_analysis(split_summary, d) for d in dimensions):
        return []
    facts = next(
        (a for a in (_analysis(split_summary, d) for d in dimensions) if a and a.get("pldc_k")),
        None,
    )
    how = (
        ""
        if facts is None
        else (f"k = {facts['pldc_k']}, {facts['retrieval_vectors']}'s vectors; ")
    )
    lines = [f"### {split}: PLDC retrieval diagnostic ({how}uses test labels)", ""]
    table = retrieval_table(split_summary, dimensions)
    if table:
        lines += [table, ""]
    lines += _missing_note(split_summary, dimensions, "retrieval")
    lines += [f"### {split}: feature and label shift per speaker (uses test labels)", ""]
    table = shift_table(split_summary, dimensions)
    if table:
        lines += [table, ""]
        files = f"`{split}_<dimension>_shift.csv`; plots: `{split}_<dimension>_shift.png`"
        lines += [f"Per speaker: {files}.", ""]
    lines += _missing_note(split_summary, dimensions, "shift")
    return lines
