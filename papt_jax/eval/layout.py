"""Saving figures only when their text fits: `layout_problems` and `save_figure`.

Every figure of the report is drawn once with the Agg renderer and checked: each title, axis
label, tick label and legend must lie inside the figure and must not overlap another; a
legend inside a panel must not cover what the panel draws (a point, a line, a bar, a text);
and an axis declared to count whole things (`count_axis`: K training speakers) must not have
ticks between whole numbers (27.5 speakers).
"""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator
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


def _clip_segment(p0, p1, box: Bbox) -> bool:
    """Whether the segment p0-p1 (display pixels) passes through `box` (Liang-Barsky)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in (
        (-dx, x0 - box.x0),
        (dx, box.x1 - x0),
        (-dy, y0 - box.y0),
        (dy, box.y1 - y0),
    ):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def _shrunk(box: Bbox, px: float) -> Bbox:
    return Bbox.from_extents(box.x0 + px, box.y0 + px, box.x1 - px, box.y1 - px)


def _covered(ax: Axes, box: Bbox, renderer) -> list[str]:
    """What `box` (a legend inside `ax`) covers of what `ax` draws."""
    inner = _shrunk(box, _TOLERANCE_PX)
    hits = []
    for i, line in enumerate(ax.lines):
        if not line.get_visible():
            continue
        points = line.get_transform().transform(line.get_path().vertices)
        points = points[np.isfinite(points).all(axis=1)]
        name = f"line {i} ({line.get_label()!r})"
        if line.get_linestyle() not in ("None", "", " ", "none") and any(
            _clip_segment(a, b, inner) for a, b in zip(points[:-1], points[1:], strict=True)
        ):
            hits.append(name)
        elif line.get_marker() not in (None, "None", "", " ", "none"):
            radius = line.get_markersize() / 2 * ax.figure.dpi / 72
            grown = _shrunk(inner, -radius)
            if any(grown.contains(x, y) for x, y in points):
                hits.append(name)
    for i, collection in enumerate(ax.collections):
        offsets = np.asarray(collection.get_offsets())
        if not collection.get_visible() or offsets.size == 0:
            continue
        points = collection.get_offset_transform().transform(offsets)
        sizes = np.broadcast_to(np.asarray(collection.get_sizes(), float), (len(points),))
        radius = np.sqrt(sizes) / 2 * ax.figure.dpi / 72  # marker area in points^2
        inside = [
            _shrunk(inner, -r).contains(x, y) for (x, y), r in zip(points, radius, strict=True)
        ]
        if any(inside):
            hits.append(f"{sum(inside)} point(s) of collection {i}")
    for i, patch in enumerate(ax.patches):
        if patch.get_visible() and _overlap(patch.get_window_extent(renderer), inner):
            hits.append(f"patch {i}")
    for text in ax.texts:
        if _shown(text) and _overlap(_extent(text, renderer), inner):
            hits.append(f"text {text.get_text()!r}")
    return hits


# Axes that count whole things (`count_axis`); weak, so figures are freed as usual.
_COUNT_AXES: weakref.WeakSet = weakref.WeakSet()


def count_axis(axis: Axis) -> None:
    """Declares that `axis` counts whole things (speakers, utterances): its ticks are placed
    on whole numbers, and `layout_problems` reports any tick between them."""
    axis.set_major_locator(MaxNLocator(integer=True))
    _COUNT_AXES.add(axis)


def _fractional_ticks(axis: Axis) -> list[float]:
    """Labelled ticks of a count axis that lie between whole numbers."""
    if axis not in _COUNT_AXES:
        return []
    labelled = [t for t in axis.get_major_ticks() if _in_view(axis, t) and _shown(t.label1)]
    return [float(t.get_loc()) for t in labelled if abs(t.get_loc() - round(t.get_loc())) > 1e-9]


def layout_problems(fig: Figure) -> list[str]:
    """Text a reader would find cut off or overprinted, measured on the drawn figure.

    Draws `fig` with an Agg renderer (running its layout engine), then checks that every
    title, axis label, tick label, legend and in-axes text lies inside the figure, that the
    titles, labels, tick labels and figure legends overlap neither each other nor (for figure
    legends) any panel, that a legend inside a panel covers none of its lines, points,
    bars or texts, and that a `count_axis` has no tick between whole numbers.

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
    for a, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            hits = _covered(ax, _extent(legend, renderer), renderer)
            if hits:
                problems.append(f"axes {a} legend covers {', '.join(hits)}")
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            ticks = _fractional_ticks(axis)
            if ticks:
                shown = ", ".join(f"{t:g}" for t in ticks)
                problems.append(
                    f"axes {a} {name} axis counts whole things but has ticks at {shown}"
                )
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
