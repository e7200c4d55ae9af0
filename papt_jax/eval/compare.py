"""Cross-system comparison tables (the paper's Tables 2 and 3) and their command line.

    python -m papt_jax.eval.compare --out comparison.md RUN [RUN ...] [--pldc_systems=A,B]
        [--splits=test-b,test-c]

writes and prints the tables; each RUN is a run's workdir, its `report/` folder or a
`summary.json`, in table row order. A missing or unreadable RUN is one `error:` line and
exit code 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.eval.results import MODE_LABELS, SYSTEM, ReportError, load_summary
from papt_jax.eval.tables import table_header, table_row, variant_cells
from papt_jax.pldc import MODES


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
    lines = table_header(dimensions)
    for summary in summaries:
        split_summary = summary["splits"].get(split)
        lines.append(
            table_row([summary["system"], *variant_cells(split_summary, SYSTEM, dimensions)])
        )
        if summary["system"] in with_pldc:
            for mode in MODES:
                label = f"{summary['system']} {MODE_LABELS[mode]}"
                lines.append(table_row([label, *variant_cells(split_summary, mode, dimensions)]))
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
