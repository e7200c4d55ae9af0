"""The report's figures: per-speaker CCC before/after PLDC and predictions against labels.

Each speaker keeps one colour and marker in every panel and figure (`speaker_styles`); panels
share their axis ranges. Figures are saved through `layout.save_figure`, which refuses
clipped or overlapping text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text

from papt_jax import metrics
from papt_jax.eval.layout import DPI, save_figure
from papt_jax.eval.results import MODE_LABELS, SYSTEM, EvalResult, speaker_order

_PANEL_IN = 3.2  # side of one square scatter panel, inches

_LEGEND_FONT = 8

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

_VARIANT_COLOURS = {SYSTEM: "0.6", "mu": "tab:blue", "sigma": "tab:orange", "both": "tab:green"}


def speaker_styles(speakers) -> dict[str, tuple[tuple[float, float, float], str]]:
    """One (colour, marker) per speaker id, in reading order (`results.speaker_order`:
    numeric ids by number, 2 before 10).

    Colours cycle through matplotlib's ten "tab10" colours and the marker changes every ten
    speakers, so up to 80 speakers get distinct styles.

    Args:
      speakers: (N,) speaker id of each utterance (ints or strings).

    Returns:
      {str(speaker): (rgb, marker)}, in that order (the legends' order).
    """
    colours = matplotlib.colormaps["tab10"].colors
    return {
        str(s): (colours[i % len(colours)], _MARKERS[(i // len(colours)) % len(_MARKERS)])
        for i, s in enumerate(speaker_order(speakers))
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
    # A first guess from one column's width; the spacing between columns can make the
    # legend wider than the figure, so drop columns until it fits.
    ncols = max(1, int(0.95 * width / legend_width))
    while True:
        legend = fig.legend(loc="outside lower center", ncols=ncols, **style)
        if ncols == 1 or _size_in(fig, legend)[0] <= 0.98 * width:
            break
        legend.remove()
        ncols -= 1
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


def plot_speaker_ccc(result: EvalResult, path: str | Path, system: str = SYSTEM) -> Path:
    """Saves `speaker_ccc_figure` to `path`."""
    return save_figure(speaker_ccc_figure(result, system), path)


def plot_speaker_ccc_bars(result: EvalResult, path: str | Path, system: str = SYSTEM) -> Path:
    """Saves `speaker_ccc_bars_figure` to `path`."""
    return save_figure(speaker_ccc_bars_figure(result, system), path)


def plot_predictions(result: EvalResult, path: str | Path, system: str = SYSTEM) -> Path:
    """Saves `predictions_figure` to `path`."""
    return save_figure(predictions_figure(result, system), path)
