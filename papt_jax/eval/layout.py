"""Saving figures only when their text fits: `layout_problems` and `save_figure`.

Every figure of the report is drawn once with the Agg renderer and checked: each title, axis
label, tick label and legend must lie inside the figure and must not overlap another.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

DPI = 150

_TOLERANCE_PX = 0.5


class LayoutWarning(UserWarning):
    """A report figure has clipped or overlapping text (see `layout_problems`)."""


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
