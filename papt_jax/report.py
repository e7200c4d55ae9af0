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
`{split}_{dimension}_per_speaker.csv` and the PNGs of `FIGURES` (checked by
`layout_problems` before saving), plus `summary.json` and `results.md`.
`comparison_table` / `write_comparison` build the cross-system tables (paper Tables 2 and 3)
from several summaries.

Command line::

    python -m papt_jax.report --out comparison.md RUN [RUN ...] [--pldc_systems=A,B]
        [--splits=test-b,test-c]

writes and prints those tables; each RUN is a run's workdir, its `report/` folder or a
`summary.json`, in table row order. A missing or unreadable RUN is one `error:` line and
exit code 2.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from papt_jax import metrics
from papt_jax.errors import UserError
from papt_jax.pldc import MODES

SYSTEM = "system"
VARIANTS = (SYSTEM, *MODES)
MODE_LABELS = {"mu": "+ μ shift", "sigma": "+ σ shift", "both": "+ (μ, σ) shift"}
DIMENSIONS = ("arousal", "valence")
MISSING = "–"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


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
        raise ReportError(f"system names repeat: {names}", hint="give each run its own config.name")
    with_pldc = set(names[-1:] if pldc_systems is None else pldc_systems)
    unknown = with_pldc - set(names)
    if unknown:
        raise ReportError(f"pldc_systems {sorted(unknown)} are not among {names}")
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


# --- Plots -----------------------------------------------------------------------------------
#
# Every figure is built by a `*_figure(result, system)` function listed in `FIGURES` and saved
# by `save_figure`, which first checks its layout (`layout_problems`). Within one result every
# figure gives a speaker the same colour and marker (`speaker_styles`), and panels of one figure
# share their axis ranges, so points can be compared across panels and across figures.

DPI = 150
_PANEL_IN = 3.2  # side of one square scatter panel, inches
_LEGEND_FONT = 8
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_VARIANT_COLOURS = {SYSTEM: "0.6", "mu": "tab:blue", "sigma": "tab:orange", "both": "tab:green"}
_TOLERANCE_PX = 0.5


class LayoutWarning(UserWarning):
    """A report figure has clipped or overlapping text (see `layout_problems`)."""


def speaker_styles(speakers) -> dict[str, tuple[tuple[float, float, float], str]]:
    """One (colour, marker) per speaker id, in sorted id order.

    Colours cycle through matplotlib's ten "tab10" colours and the marker changes every ten
    speakers, so up to 80 speakers get distinct styles.

    Args:
      speakers: (N,) speaker id of each utterance (ints or strings).

    Returns:
      {str(speaker): (rgb, marker)}, ordered like `np.unique(speakers)`.
    """
    colours = matplotlib.colormaps["tab10"].colors
    return {
        str(s): (colours[i % len(colours)], _MARKERS[(i // len(colours)) % len(_MARKERS)])
        for i, s in enumerate(np.unique(np.asarray(speakers)))
    }


def _variant_label(variant: str, system: str) -> str:
    return system if variant == SYSTEM else MODE_LABELS[variant]


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # a real renderer, so text extents can be measured before saving
    return fig


def _size_in(fig: Figure, artist: Artist) -> tuple[float, float]:
    """(width, height) in inches that `artist` takes when drawn."""
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.width / fig.dpi, box.height / fig.dpi


def _speaker_legend(fig: Figure, styles: Mapping[str, tuple], title: Text) -> None:
    """Figure legend with one entry per speaker; the figure grows to make room for it.

    Right of the panels, centred, when it fits between the figure title's band at the top
    and an equal band at the bottom (so the title, centred on the whole figure, cannot run
    into it); otherwise below the panels in as many columns as the width allows. The panels
    keep their size either way.
    """
    handles = [
        Line2D([], [], linestyle="", marker=marker, color=colour, markersize=6, label=speaker)
        for speaker, (colour, marker) in styles.items()
    ]
    style = {
        "handles": handles,
        "title": "speaker",
        "fontsize": _LEGEND_FONT,
        "title_fontsize": _LEGEND_FONT + 1,
        "frameon": False,
    }
    width, height = fig.get_size_inches()
    title_band = _size_in(fig, title)[1] + 0.15
    legend = fig.legend(loc="outside right center", **style)
    legend_width, legend_height = _size_in(fig, legend)
    if legend_height <= height - 2 * title_band:
        fig.set_size_inches(width + legend_width + 0.1, height)
        return
    legend.remove()
    ncols = max(1, int(0.95 * width / legend_width))
    legend = fig.legend(loc="outside lower center", ncols=ncols, **style)
    fig.set_size_inches(width, height + _size_in(fig, legend)[1] + 0.1)


def _fit_title(fig: Figure, title: Text) -> None:
    """Widens `fig` when its title (centred on the figure) is wider than the figure."""
    width, height = fig.get_size_inches()
    fig.set_size_inches(max(width, _size_in(fig, title)[0] + 0.3), height)


def _text_width_in(fig: Figure, texts: Sequence[str], fontsize: float) -> float:
    """Width in inches of the widest of `texts` in the default font at `fontsize`."""
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=fontsize)
    widths = [renderer.get_text_width_height_descent(t, font, ismath=False)[0] for t in texts]
    return max(widths, default=0.0) / fig.dpi


def _per_speaker(result: EvalResult) -> dict[str, metrics.PerSpeakerCCC]:
    return {
        v: metrics.per_speaker_ccc(p, result.labels, result.speakers)
        for v, p in result.variants().items()
    }


def _ccc_limits(per: Mapping[str, metrics.PerSpeakerCCC]) -> tuple[float, float]:
    """Axis range holding every finite per-speaker CCC of every variant, 0 and 1 (CCC's top)."""
    values = np.concatenate([p.ccc for p in per.values()])
    values = values[np.isfinite(values)]
    low = min(0.0, float(values.min())) if values.size else 0.0
    return low - 0.1, 1.05


def _excluded_note(per: metrics.PerSpeakerCCC, limit: int = 6) -> str:
    """E.g. "1 speaker excluded (fewer than 2 utterances): MSP_1370 (n=1)"."""
    names = [f"{per.speakers[i]} (n={per.counts[i]})" for i in np.flatnonzero(~per.valid)]
    if not names:
        return f"{per.speakers.size} speakers, none excluded"
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    noun = "speaker" if len(names) == 1 else "speakers"
    return f"{len(names)} {noun} excluded (fewer than 2 utterances): {shown}"


def speaker_ccc_figure(result: EvalResult, system: str = SYSTEM) -> Figure:
    """Per-speaker CCC before (x) vs after (y), one panel per PLDC mode, one point per speaker.

    Points above the diagonal are speakers the mode helps. Speakers excluded from A-CCC are
    named under the panels.
    """
    per = _per_speaker(result)
    modes = list(result.calibrated) or [SYSTEM]
    styles = speaker_styles(result.speakers)
    before = per[SYSTEM]
    low, high = _ccc_limits(per)
    fig = _new_figure(_PANEL_IN * len(modes) + 0.6, _PANEL_IN + 1.1)
    axes = fig.subplots(1, len(modes), sharex=True, sharey=True, squeeze=False)[0]
    for ax, mode in zip(axes, modes, strict=True):
        after = per[mode]
        shown = before.valid & after.valid
        ax.axline((0.0, 0.0), slope=1.0, color="0.5", lw=1, ls="--", zorder=1)
        ax.axhline(0.0, color="0.85", lw=0.8, zorder=0)
        ax.axvline(0.0, color="0.85", lw=0.8, zorder=0)
        for i in np.flatnonzero(shown):
            colour, marker = styles[str(before.speakers[i])]
            ax.scatter(before.ccc[i], after.ccc[i], s=36, color=colour, marker=marker, zorder=2)
        better = int((after.ccc[shown] > before.ccc[shown]).sum())
        if mode == SYSTEM:  # no PLDC output to compare: the diagonal only
            ax.set_title(f"{system}\n(no PLDC variants in this result)")
        else:
            ax.set_title(f"{MODE_LABELS[mode]}\n{better} of {int(shown.sum())} speakers improve")
        ax.set_xlabel(f"CCC, {system}")
        ax.label_outer()
    axes[0].set_ylabel("CCC after PLDC")
    axes[0].set_xlim(low, high)
    axes[0].set_ylim(low, high)
    title = fig.suptitle(
        f"{result.split} {result.dimension}: per-speaker CCC before and after PLDC\n"
        + _excluded_note(before)
    )
    _speaker_legend(fig, styles, title)
    _fit_title(fig, title)
    return fig


def speaker_ccc_bars_figure(result: EvalResult, system: str = SYSTEM) -> Figure:
    """Per-speaker CCC as bars, speakers sorted by the uncalibrated CCC (highest on top).

    One panel per PLDC mode: the uncalibrated CCC (grey) beside the calibrated one. Speakers
    with no CCC (fewer than 2 utterances) are listed last and marked "excluded".
    """
    per = _per_speaker(result)
    before = per[SYSTEM]
    modes = list(result.calibrated) or [SYSTEM]
    finite = np.isfinite(before.ccc)
    # Descending CCC, excluded speakers last; stable, so ties keep id order.
    order = np.argsort(np.where(finite, -before.ccc, np.inf), kind="stable")
    n = order.size
    rows = np.arange(n)
    bar = 0.4
    low, high = _ccc_limits(per)  # the scatter figure's range: figures compare directly

    names = [f"{before.speakers[i]} (n={before.counts[i]})" for i in order]
    height = 1.6 + 0.3 * n
    fig = _new_figure(1.0, height)  # width set once the speaker names can be measured
    names_width = _text_width_in(fig, names, _LEGEND_FONT + 1)
    fig.set_size_inches(names_width + 0.6 + 2.6 * len(modes), height)
    axes = fig.subplots(1, len(modes), sharex=True, sharey=True, squeeze=False)[0]
    for ax, mode in zip(axes, modes, strict=True):
        after = per[mode]
        if mode != SYSTEM:
            ax.barh(rows - bar / 2, before.ccc[order], height=bar, color=_VARIANT_COLOURS[SYSTEM])
            better = int((after.ccc > before.ccc).sum())  # NaN compares False
            shown = int((before.valid & after.valid).sum())
            title = f"{MODE_LABELS[mode]}\n{better} of {shown} speakers improve"
        else:
            title = system
        offset = 0.0 if mode == SYSTEM else bar / 2
        ax.barh(rows + offset, after.ccc[order], height=bar, color=_VARIANT_COLOURS[mode])
        for row, i in enumerate(order):
            if not (before.valid[i] and after.valid[i]):
                ax.text(0.0, row, " excluded", va="center", ha="left", fontsize=_LEGEND_FONT)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("per-speaker CCC")
        ax.grid(axis="x", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    axes[0].set_xlim(low, high)
    axes[0].set_yticks(rows, labels=names)
    axes[0].set_ylim(n - 0.5, -0.5)  # highest uncalibrated CCC on top
    axes[0].tick_params(axis="y", labelsize=_LEGEND_FONT + 1)
    handles = [
        Patch(color=_VARIANT_COLOURS[v], label=_variant_label(v, system))
        for v in (SYSTEM, *result.calibrated)
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=len(handles),
        frameon=False,
        fontsize=_LEGEND_FONT + 1,
    )
    title = fig.suptitle(
        f"{result.split} {result.dimension}: per-speaker CCC, sorted by {system}'s CCC"
    )
    _fit_title(fig, title)
    return fig


def predictions_figure(result: EvalResult, system: str = SYSTEM) -> Figure:
    """Predicted (y) vs true (x) per variant, one point per utterance coloured by speaker.

    Each panel's title gives the variant's O-CCC and A-CCC; the diagonal is a perfect match.
    """
    variants = result.variants()
    per = _per_speaker(result)
    styles = speaker_styles(result.speakers)
    ids, inverse = np.unique(result.speakers, return_inverse=True)
    ncols = 2 if len(variants) == 4 else len(variants)
    nrows = math.ceil(len(variants) / ncols)
    values = np.concatenate([result.labels, *variants.values()])
    pad = 0.05 * max(float(np.ptp(values)), 1e-6)
    low, high = float(values.min()) - pad, float(values.max()) + pad

    fig = _new_figure(_PANEL_IN * ncols + 0.6, _PANEL_IN * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (variant, preds) in zip(axes, variants.items(), strict=False):
        ax.axline((low, low), slope=1.0, color="0.5", lw=1, ls="--", zorder=1)
        for k, speaker in enumerate(ids):
            colour, marker = styles[str(speaker)]
            sel = inverse == k
            ax.scatter(
                result.labels[sel],
                preds[sel],
                s=18,
                color=colour,
                marker=marker,
                alpha=0.8,
                linewidths=0,
                zorder=2,
            )
        o_ccc = metrics.overall_ccc(preds, result.labels)
        valid = per[variant].valid
        a_ccc = float(per[variant].ccc[valid].mean()) if valid.any() else float("nan")
        ax.set_title(f"{_variant_label(variant, system)}\nO-CCC {o_ccc:.3f}, A-CCC {a_ccc:.3f}")
        ax.set_xlabel(f"true {result.dimension}")
        ax.set_ylabel(f"predicted {result.dimension}")
        ax.label_outer()
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    axes[0].set_xlim(low, high)
    axes[0].set_ylim(low, high)
    title = fig.suptitle(
        f"{result.split} {result.dimension}: predicted vs true "
        f"({result.keys.size} utterances, {ids.size} speakers)"
    )
    _speaker_legend(fig, styles, title)
    _fit_title(fig, title)
    return fig


FIGURES = {
    "speaker_ccc": speaker_ccc_figure,
    "speaker_ccc_bars": speaker_ccc_bars_figure,
    "pred_vs_true": predictions_figure,
}
"""Every figure `write_report` writes per result: `{split}_{dimension}_{name}.png`."""


# --- Layout checks ---------------------------------------------------------------------------


def _extent(artist: Artist, renderer) -> Bbox:
    return artist.get_window_extent(renderer)


def _in_view(axis, tick) -> bool:
    low, high = sorted(axis.get_view_interval())
    span = max(high - low, 1e-12)
    return low - 1e-9 * span <= tick.get_loc() <= high + 1e-9 * span


def _tick_labels(ax: Axes, axis_name: str) -> list[Text]:
    """The tick labels actually drawn: visible, non-empty and at a tick inside the view."""
    axis = ax.xaxis if axis_name == "x" else ax.yaxis
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        if not _in_view(axis, tick):
            continue
        out += [t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text()]
    return out


def _shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text())


def _layout_items(fig: Figure, renderer) -> tuple[list, list]:
    """(name, bbox) of every text to check: (edge-only items, items that must not overlap)."""
    edge_only, solid = [], []
    for t in fig.texts:  # suptitle, supxlabel, supylabel, fig.text
        if _shown(t):
            solid.append((f"figure text {t.get_text()!r}", _extent(t, renderer)))
    for i, legend in enumerate(fig.legends):
        solid.append((f"figure legend {i}", _extent(legend, renderer)))
    for a, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"axes {a}"
        # An axes' own Text children besides `ax.texts` are its three title slots.
        titles = [c for c in ax.get_children() if isinstance(c, Text) and c not in ax.texts]
        for t in [*titles, ax.xaxis.label, ax.yaxis.label]:
            if _shown(t):
                solid.append((f"{where} label {t.get_text()!r}", _extent(t, renderer)))
        for name in ("x", "y"):
            for t in _tick_labels(ax, name):
                solid.append((f"{where} {name} tick label {t.get_text()!r}", _extent(t, renderer)))
        if ax.get_legend() is not None:
            edge_only.append((f"{where} legend", _extent(ax.get_legend(), renderer)))
        for t in ax.texts:
            if _shown(t):
                edge_only.append((f"{where} text {t.get_text()!r}", _extent(t, renderer)))
        edge_only.append((f"{where} (everything it draws)", ax.get_tightbbox(renderer)))
    return edge_only, solid


def _overlap(a: Bbox, b: Bbox) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > _TOLERANCE_PX and height > _TOLERANCE_PX


def _outside(box: Bbox, frame: Bbox) -> list[str]:
    sides = {
        "left": frame.x0 - box.x0,
        "right": box.x1 - frame.x1,
        "bottom": frame.y0 - box.y0,
        "top": box.y1 - frame.y1,
    }
    return [f"{side} by {px:.0f} px" for side, px in sides.items() if px > _TOLERANCE_PX]


def layout_problems(fig: Figure) -> list[str]:
    """Text a reader would find cut off or overprinted, measured on the drawn figure.

    Draws `fig` with an Agg renderer (running its layout engine), then checks that every
    title, axis label, tick label, legend and in-axes text lies inside the figure, that the
    titles, labels, tick labels and figure legends overlap neither each other nor (for figure
    legends) any panel.

    Args:
      fig: a matplotlib `Figure` (any canvas; an Agg canvas is attached when needed).

    Returns:
      One line per problem, e.g. "axes 0 label 'CCC' is cut off at the left by 12 px";
      empty when the figure is clean.
    """
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    edge_only, solid = _layout_items(fig, renderer)
    problems = []
    for name, box in edge_only + solid:
        cut = _outside(box, fig.bbox)
        if cut:
            problems.append(f"{name} is cut off at the {', '.join(cut)}")
    for i, (name_a, box_a) in enumerate(solid):
        for name_b, box_b in solid[i + 1 :]:
            if _overlap(box_a, box_b):
                problems.append(f"{name_a} overlaps {name_b}")
    for i, legend in enumerate(fig.legends):
        box = _extent(legend, renderer)
        for a, ax in enumerate(fig.axes):
            if ax.get_visible() and _overlap(box, ax.bbox):
                problems.append(f"figure legend {i} covers axes {a}")
    return problems


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Saves `fig` as a PNG after `layout_problems`; problems become a `LayoutWarning`.

    The PNG is the image the check drew (`fig.dpi`), so the figure is rendered once.
    """
    path = Path(path)
    problems = layout_problems(fig)
    if problems:
        warnings.warn(f"{path.name}: " + "; ".join(problems), LayoutWarning, stacklevel=2)
    matplotlib.image.imsave(path, np.asarray(fig.canvas.buffer_rgba()), dpi=fig.dpi)
    return path


def plot_speaker_ccc(result: EvalResult, path: str | Path, system: str = SYSTEM) -> Path:
    """Saves `speaker_ccc_figure` to `path`."""
    return save_figure(speaker_ccc_figure(result, system), path)


def plot_speaker_ccc_bars(result: EvalResult, path: str | Path, system: str = SYSTEM) -> Path:
    """Saves `speaker_ccc_bars_figure` to `path`."""
    return save_figure(speaker_ccc_bars_figure(result, system), path)


def plot_predictions(result: EvalResult, path: str | Path, system: str = SYSTEM) -> Path:
    """Saves `predictions_figure` to `path`."""
    return save_figure(predictions_figure(result, system), path)


# --- Everything ------------------------------------------------------------------------------


def write_report(
    results: Sequence[EvalResult], out_dir: str | Path, system: str, plots: bool = True
) -> dict[str, Path]:
    """Writes every report file of one system into `out_dir` (created if needed).

    Args:
      results: one `EvalResult` per (split, dimension).
      out_dir: destination folder.
      system: system name for the tables and plots, e.g. "PAPT-FT".
      plots: also write the PNGs of `FIGURES` per result.

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
            for name, build in FIGURES.items():
                written[f"{r.stem}_{name}_png"] = save_figure(
                    build(r, system), out / f"{r.stem}_{name}.png"
                )
    return written


# --- Command line ----------------------------------------------------------------------------


def find_summary(path: str | Path) -> Path:
    """The `summary.json` one command-line argument names.

    Args:
      path: a summary.json, a run's `report/` folder or the run's workdir.

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


def _present_splits(summaries: Sequence[Mapping]) -> list[str]:
    """Split names of any summary, in first-seen order."""
    return list(dict.fromkeys(s for summary in summaries for s in summary["splits"]))


def main(argv: Sequence[str]) -> None:
    """Writes and prints the comparison tables of several runs (paper Tables 2 and 3 shape).

    Usage: `python -m papt_jax.report --out FILE RUN [RUN ...]`, where each RUN is a run's
    workdir, its `report/` folder or a `summary.json`, in table row order.
    """
    from absl import flags

    args = list(argv[1:])
    if not args:
        raise ReportError(
            "no runs given", hint="python -m papt_jax.report --out comparison.md RUN [RUN ...]"
        )
    summaries = [load_summary(find_summary(a)) for a in args]
    present = _present_splits(summaries)
    splits = flags.FLAGS.splits or present
    unknown = [s for s in splits if s not in present]
    if unknown:
        raise ReportError(f"no run has split(s) {unknown}; the runs have {present}")
    out = Path(flags.FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = write_comparison(summaries, out, splits, flags.FLAGS.pldc_systems or None)
    print(path.read_text())


def _define_flags() -> None:
    # Defined only when run as a program: this module is also a library imported by the
    # pipeline, whose own flags must not gain these.
    from absl import flags

    flags.DEFINE_string("out", None, "Markdown file for the comparison tables.", required=True)
    flags.DEFINE_list(
        "pldc_systems",
        [],
        "Systems whose PLDC rows follow their own row, comma-separated (default: the last run).",
    )
    flags.DEFINE_list(
        "splits", [], "Splits to tabulate, comma-separated (default: every split of the runs)."
    )


if __name__ == "__main__":
    from papt_jax import cli

    _define_flags()
    cli.run(main)
