"""One system's report folder: CSVs, `summary.json`, `results.md` and the figures."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.eval import analysis as analysis_lib
from papt_jax.eval.analysis_figures import retrieval_figure, shift_figure
from papt_jax.eval.figures import FIGURES
from papt_jax.eval.layout import save_figure
from papt_jax.eval.results import EvalResult, build_summary, write_summary_json
from papt_jax.eval.tables import (
    cell_text,
    write_per_speaker_csv,
    write_predictions_csv,
    write_results_md,
)
from papt_jax.shift_analysis import SpeakerShift

# Figures of the analyses, written when the result has them (see `write_report`).
ANALYSIS_FIGURES = ("shift", "retrieval")


def load_references(
    passes_dir: str | Path, results: Sequence[EvalResult], k: int | None
) -> dict[str, analysis_lib.Reference]:
    """The analyses' inputs from an evaluation's `passes/` folder (`analysis.load_references`)."""
    return analysis_lib.load_references(passes_dir, results, k)


def write_shift_csv(shift: SpeakerShift, path: str | Path) -> Path:
    """One row per test speaker: speaker, n, feature_kl, label_kl, ccc, used (`nan` if none)."""
    path = Path(path)
    columns = (shift.speakers, shift.counts, shift.feature_kl, shift.label_kl, shift.ccc)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["speaker", "n", "feature_kl", "label_kl", "ccc", "used"])
        for *row, used in zip(*columns, shift.used, strict=True):
            writer.writerow([cell_text(v) for v in row] + [int(used)])
    return path


def write_report(
    results: Sequence[EvalResult],
    out_dir: str | Path,
    system: str,
    plots: bool = True,
    run: Mapping | None = None,
    references: Mapping[str, analysis_lib.Reference] | None = None,
) -> dict[str, Path]:
    """Writes every report file of one system into `out_dir` (created if needed).

    Args:
      results: one `EvalResult` per (split, dimension).
      out_dir: destination folder.
      system: system name for the tables and plots, e.g. "PAPT-FT".
      plots: also write the PNGs of `FIGURES` (and of the analyses) per result.
      run: facts about the run (PLDC k, fingerprint) for the summary and `results.md`.
      references: {result stem: `analysis.Reference`} (see `analysis.load_references`); with
        it the report adds the retrieval diagnostic and the speaker-shift analysis. The PLDC
        oracle needs none and is always reported.

    Returns:
      {name: path} of the files written, e.g. "summary", "results_md",
      "test-b_arousal_predictions", "test-b_arousal_per_speaker", "test-b_arousal_shift",
      "test-b_arousal_speaker_ccc_png", "test-b_arousal_speaker_ccc_bars_png",
      "test-b_arousal_pred_vs_true_png", "test-b_arousal_shift_png",
      "test-b_arousal_retrieval_png".
    """
    if not results:
        raise ValueError("no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs = references or {}
    analyses = {r.stem: analysis_lib.analyse(r, refs.get(r.stem)) for r in results}
    entries = {r.stem: analysis_lib.summary_entry(r, analyses[r.stem]) for r in results}
    summary = build_summary(results, system, run, entries)
    written = {
        "summary": write_summary_json(summary, out / "summary.json"),
        "results_md": write_results_md(summary, out / "results.md"),
    }
    for r in results:
        found = analyses[r.stem]
        written[f"{r.stem}_predictions"] = write_predictions_csv(
            r, out / f"{r.stem}_predictions.csv"
        )
        written[f"{r.stem}_per_speaker"] = write_per_speaker_csv(
            r, out / f"{r.stem}_per_speaker.csv"
        )
        if found.shift is not None:
            written[f"{r.stem}_shift"] = write_shift_csv(found.shift, out / f"{r.stem}_shift.csv")
        if not plots:
            continue
        figures = {name: build(r, system) for name, build in FIGURES.items()}
        if found.shift is not None:
            figures["shift"] = shift_figure(r, found.shift, system)
        if found.retrieval is not None:
            figures["retrieval"] = retrieval_figure(r, found.retrieval, found.k)
        for name, fig in figures.items():
            written[f"{r.stem}_{name}_png"] = save_figure(fig, out / f"{r.stem}_{name}.png")
    return written
