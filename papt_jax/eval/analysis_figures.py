"""Figures of the report's analyses: speaker shift against CCC, and PLDC's retrieved targets.

One point per test speaker. Saved through `layout.save_figure` like every report figure.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from papt_jax.eval.analysis import Retrieval
from papt_jax.eval.figures import _LEGEND_FONT, _PANEL_IN, _fit_title, _new_figure
from papt_jax.eval.results import EvalResult
from papt_jax.shift_analysis import SpeakerShift

_POINT = {"s": 30, "color": "tab:blue", "alpha": 0.8, "linewidths": 0, "zorder": 2}


def _r_text(r: float, p: float | None, n: int) -> str:
    if math.isnan(r):
        return f"r undefined (n = {n})"
    if p is None or math.isnan(p):
        return f"r = {r:.2f}, n = {n}"
    p_text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    return f"r = {r:.2f}, {p_text}, n = {n}"


def _fit_line(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    """Least-squares line through the points (what Pearson's r measures), if defined."""
    if x.size < 3 or np.ptp(x) == 0:
        return
    slope, intercept = np.polyfit(x, y, 1)
    # Over the points' range only: an unbounded line would stretch the axes to values no
    # speaker has (e.g. a negative KL).
    ends = np.array([x.min(), x.max()])
    ax.plot(ends, slope * ends + intercept, color="0.4", lw=1, ls="--", zorder=1)


def shift_figure(result: EvalResult, shift: SpeakerShift, system: str) -> Figure:
    """Three panels, one point per speaker: feature KL vs CCC, label KL vs CCC, feature KL vs
    label KL, with Pearson r in each title and its least-squares line dashed.

    Speakers left out of the correlations (fewer than 2 utterances, no valid CCC) are not
    drawn; their number is in the figure title.
    """
    used = shift.used
    fkl, lkl, ccc = shift.feature_kl[used], shift.label_kl[used], shift.ccc[used]
    panels = (
        ("feature_kl_vs_ccc", fkl, ccc, "feature KL (nats)", f"per-speaker CCC, {system}"),
        ("label_kl_vs_ccc", lkl, ccc, "label KL (nats)", f"per-speaker CCC, {system}"),
        ("feature_kl_vs_label_kl", fkl, lkl, "feature KL (nats)", "label KL (nats)"),
    )
    fig = _new_figure(3 * _PANEL_IN + 0.6, _PANEL_IN + 1.1)
    axes = fig.subplots(1, 3, squeeze=True)
    for ax, (name, x, y, xlabel, ylabel) in zip(axes, panels, strict=True):
        corr = shift.correlations[name]
        ax.scatter(x, y, **_POINT)
        _fit_line(ax, x, y)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(_r_text(corr["r"], corr["p"], corr["n"]), fontsize=_LEGEND_FONT + 1)
    left_out = int(shift.speakers.size - used.sum())
    title = fig.suptitle(
        f"{result.split} {result.dimension}: speaker shift from the training set\n"
        f"{int(used.sum())} speakers shown, {left_out} left out (< 2 utterances or no CCC); "
        "dashed: least-squares line"
    )
    _fit_title(fig, title)
    return fig


def retrieval_figure(result: EvalResult, retrieval: Retrieval, k: int) -> Figure:
    """Two panels, one point per test speaker: PLDC's retrieved label mean (std) against the
    speaker's own, with the diagonal (perfect retrieval) and the training set's value (the
    trivial guess) as reference lines; Pearson r and MAEs in the titles.
    """
    diag = retrieval.diagnostic
    used = diag["used"]
    panels = (
        (
            "mean",
            "μ",
            diag["own_mean"],
            retrieval.mu_bar,
            retrieval.all_mean,
            retrieval.global_mean,
        ),
        ("std", "σ", diag["own_std"], retrieval.sigma_bar, retrieval.all_std, retrieval.global_std),
    )
    fig = _new_figure(2 * _PANEL_IN + 0.6, _PANEL_IN + 1.2)
    axes = fig.subplots(1, 2, squeeze=True)
    for ax, (stat, symbol, own, retrieved, every, trivial) in zip(axes, panels, strict=True):
        x, y = np.asarray(own)[used], np.asarray(retrieved)[used]
        values = np.concatenate([x, y, [every, trivial]])
        pad = 0.08 * max(float(np.ptp(values)), 1e-3)
        low, high = float(values.min()) - pad, float(values.max()) + pad
        ax.axline((low, low), slope=1.0, color="0.5", lw=1, ls="--", zorder=1, label="y = x")
        ax.axhline(every, color="tab:green", lw=1.5, ls=":", zorder=1.5, label="all speakers")
        ax.axhline(trivial, color="tab:orange", lw=1, zorder=1, label="training set")
        ax.scatter(x, y, **_POINT)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel(f"speaker's own label {symbol} (test labels)")
        ax.set_ylabel(f"retrieved {symbol}̄ (k = {k})")
        corr = diag[f"{stat}_r"]
        r_text = "r undefined" if math.isnan(corr) else f"r = {corr:.2f}"
        mae_all = retrieval.all_speakers[f"{stat}_mae"]
        ax.set_title(
            f"{r_text}, MAE {diag[f'{stat}_mae']:.3f}\n"
            f"MAE all speakers {mae_all:.3f}, training set {diag[f'{stat}_mae_global']:.3f}",
            fontsize=_LEGEND_FONT + 1,
        )
    # Below the panels, not inside one: no corner of a panel is sure to be free of points.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=len(handles),
        fontsize=_LEGEND_FONT,
        frameon=False,
    )
    title = fig.suptitle(
        f"{result.split} {result.dimension}: label statistics PLDC retrieved\n"
        f"{diag['n']} test speakers with at least 2 utterances"
    )
    _fit_title(fig, title)
    return fig
