"""The personalization gap (the paper's Figure 1) from finished runs: a table and a figure.

    python -m papt_jax.eval.gap --out runs/gap/gap.md RUN [RUN ...]

Each RUN is a workdir of configs/personalization_gap.py; its config says K
(`finetune.train_speakers`) and whether it is speaker-dependent. Runs pair up by K; the gap
is the speaker-dependent minus the speaker-independent test-b score, for O-CCC and A-CCC of
each dimension. The figure (`gap.png` next to the table) plots both scores and the gap
against K.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.eval.layout import count_axis, save_figure
from papt_jax.eval.results import ReportError, load_summary

METRICS = ("o_ccc", "a_ccc")
METRIC_NAMES = {"o_ccc": "O-CCC", "a_ccc": "A-CCC"}


def gap_point(workdir: str | Path, split: str = "test-b") -> dict:
    """{'k', 'dependent', '<dim>/<metric>': value} of one finished run.

    Raises:
      ReportError: the folder is not a finished personalization-gap run.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"{workdir}: no such run folder")
    try:
        config = json.loads((workdir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{workdir}: not a finished run ({e})") from e
    k = config.get("finetune", {}).get("train_speakers")
    if not k:
        raise ReportError(f"{workdir}: not a personalization-gap run (no finetune.train_speakers)")
    summary = load_summary(workdir / "report" / "summary.json")
    per_split = summary["splits"].get(split)
    if per_split is None:
        raise ReportError(f"{workdir}: the report has no {split} results")
    point = {"k": int(k), "dependent": bool(config["finetune"]["speaker_dependent"])}
    for dim in DIMENSIONS:
        system = (per_split.get(dim) or {}).get("system") or {}
        for metric in METRICS:
            value = system.get(metric)
            point[f"{dim}/{metric}"] = math.nan if value is None else float(value)
    return point


def pair_points(points: Sequence[Mapping]) -> list[dict]:
    """One row per K with both kinds: {'k', 'si': point, 'sd': point}, sorted by K.

    Raises:
      ReportError: a K lacks one kind, or has one twice.
    """
    by_k: dict[int, dict] = {}
    for p in points:
        kind = "sd" if p["dependent"] else "si"
        row = by_k.setdefault(p["k"], {"k": p["k"]})
        if kind in row:
            raise ReportError(f"two {kind.upper()} runs for K={p['k']}")
        row[kind] = p
    missing = [
        f"K={k} has no {kind.upper()} run"
        for k, row in sorted(by_k.items())
        for kind in ("si", "sd")
        if kind not in row
    ]
    if missing:
        raise ReportError("; ".join(missing))
    return [by_k[k] for k in sorted(by_k)]


def gap_table(rows: Sequence[Mapping]) -> str:
    """Markdown: per K, SI and SD scores and the gap, for each dimension and metric."""
    head = ["K"]
    for dim in DIMENSIONS:
        for metric in METRICS:
            name = f"{dim.capitalize()} {METRIC_NAMES[metric]}"
            head += [f"{name} SI", f"{name} SD", f"{name} gap"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [str(row["k"])]
        for dim in DIMENSIONS:
            for metric in METRICS:
                si, sd = row["si"][f"{dim}/{metric}"], row["sd"][f"{dim}/{metric}"]
                cells += [f"{si:.3f}", f"{sd:.3f}", f"{sd - si:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_figure(rows: Sequence[Mapping]) -> Figure:
    """Per dimension: SI and SD A-CCC and O-CCC against K (top), their gap (bottom).

    K is a count of speakers, so its ticks are whole numbers; the legend sits below the
    panels, where it covers no line.
    """
    fig = Figure(figsize=(4.2 * len(DIMENSIONS), 6.4), layout="constrained")
    axes = fig.subplots(2, len(DIMENSIONS), sharex=True, squeeze=False)
    ks = [r["k"] for r in rows]
    for col, dim in enumerate(DIMENSIONS):
        top, bottom = axes[0][col], axes[1][col]
        for metric, style in zip(METRICS, ("-", "--"), strict=True):
            si = [r["si"][f"{dim}/{metric}"] for r in rows]
            sd = [r["sd"][f"{dim}/{metric}"] for r in rows]
            name = METRIC_NAMES[metric]
            top.plot(ks, si, style, marker="o", color="tab:blue", label=f"SI {name}")
            top.plot(ks, sd, style, marker="s", color="tab:orange", label=f"SD {name}")
            gap = [b - a for a, b in zip(si, sd, strict=True)]
            bottom.plot(ks, gap, style, marker="o", color="tab:green", label=f"gap {name}")
        bottom.axhline(0.0, color="black", linewidth=0.8)
        top.set_title(dim.capitalize())
        top.set_ylabel("CCC on test-b")
        bottom.set_ylabel("SD - SI")
        bottom.set_xlabel("training speakers K")
        count_axis(bottom.xaxis)
    handles, labels = [], []
    for ax in (axes[0][0], axes[1][0]):
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Personalization gap")
    return fig


def write_gap(points: Sequence[Mapping], out: str | Path) -> tuple[Path, Path]:
    """Writes the table (`out`, markdown) and the figure (`out` with .png)."""
    rows = pair_points(points)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = save_figure(gap_figure(rows), out.with_suffix(".png"))
    out.write_text(
        "# Personalization gap (Figure 1), test-b\n\n"
        "SI: speaker-independent; SD: speaker-dependent (test-a's speakers in training); "
        "gap = SD - SI.\n\n" + gap_table(rows) + f"\n\n![gap]({figure.name})\n"
    )
    return out, figure


def main(argv: Sequence[str]) -> None:
    from absl import flags

    runs = list(argv[1:])
    if not runs:
        raise ReportError("no runs given", hint="python -m papt_jax.eval.gap --out F RUN...")
    table, figure = write_gap([gap_point(r) for r in runs], flags.FLAGS.out)
    print(table.read_text())
    print(f"figure: {figure}")


if __name__ == "__main__":
    from absl import flags

    from papt_jax import cli

    flags.DEFINE_string("out", None, "Markdown file for the table (figure beside it).")
    flags.mark_flag_as_required("out")
    cli.run(main)
