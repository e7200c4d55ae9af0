"""One system's report folder: CSVs, `summary.json`, `results.md` and the figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.eval.figures import FIGURES
from papt_jax.eval.layout import save_figure
from papt_jax.eval.results import EvalResult, build_summary, write_summary_json
from papt_jax.eval.tables import write_per_speaker_csv, write_predictions_csv, write_results_md


def write_report(
    results: Sequence[EvalResult],
    out_dir: str | Path,
    system: str,
    plots: bool = True,
    run: Mapping | None = None,
) -> dict[str, Path]:
    """Writes every report file of one system into `out_dir` (created if needed).

    Args:
      results: one `EvalResult` per (split, dimension).
      out_dir: destination folder.
      system: system name for the tables and plots, e.g. "PAPT-FT".
      plots: also write the PNGs of `FIGURES` per result.
      run: facts about the run (PLDC k, fingerprint) for the summary and `results.md`.

    Returns:
      {name: path} of the files written, e.g. "summary", "results_md",
      "test-b_arousal_predictions", "test-b_arousal_per_speaker",
      "test-b_arousal_speaker_ccc_png", "test-b_arousal_speaker_ccc_bars_png",
      "test-b_arousal_pred_vs_true_png".
    """
    if not results:
        raise ValueError("no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(results, system, run)
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
            for name, build in FIGURES.items():
                written[f"{r.stem}_{name}_png"] = save_figure(
                    build(r, system), out / f"{r.stem}_{name}.png"
                )
    return written
