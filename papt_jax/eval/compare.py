"""Cross-system comparison tables (the paper's Tables 2 and 3) and their command line.

    python -m papt_jax.eval.compare --out comparison.md RUN [RUN ...] [--pldc_systems=A,B]
        [--splits=test-b,test-c] [--baseline=Vanilla-FT] [--n_boot=2000] [--bootstrap_seed=0]

writes and prints the tables; each RUN is a run's workdir, its `report/` folder or a
`summary.json`, or `NAME=DIR1+DIR2+...` for one system run with several seeds (cells then
show mean ± std over seeds), in table row order (see `eval.runs`). Under each table, every
system (and the PLDC rows shown) is compared with the baseline run (system name
'Vanilla-FT' unless `--baseline` names another): the difference in O-CCC and A-CCC with a
95 % paired bootstrap interval over test speakers (`eval.significance_table`). A missing or
unreadable RUN, or runs evaluated on different test utterances, is one `error:` line and
exit code 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.eval import significance_table
from papt_jax.eval.results import MODE_LABELS, SYSTEM, ReportError, load_summary
from papt_jax.eval.runs import Run, find_summary, merged_summary, parse_run
from papt_jax.eval.tables import table_header, table_row, variant_cells
from papt_jax.pldc import MODES

__all__ = ["comparison_table", "find_summary", "significance_section", "write_comparison"]


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
    with_pldc = _pldc_names(names, pldc_systems)
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


def _pldc_names(names: Sequence[str], pldc_systems: Sequence[str] | None) -> set[str]:
    return set(names[-1:] if pldc_systems is None else pldc_systems)


def significance_section(
    runs: Sequence[Run],
    baseline: str | None,
    split: str,
    pldc_systems: Sequence[str] | None = None,
    dimensions: Sequence[str] = DIMENSIONS,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[str]:
    """Markdown lines: each row's difference from the baseline with its 95 % interval.

    Args:
      runs: the runs, in row order.
      baseline: the baseline's name; None: the run named `significance_table.BASELINE`, and
        a note instead of the table when there is none.
      split, pldc_systems, dimensions: as `comparison_table`.
      n_boot, seed: bootstrap replicates and their seed.
    """
    names = [r.name for r in runs]
    wanted = baseline or significance_table.BASELINE
    if wanted not in names:
        if baseline is not None:
            raise ReportError(f"--baseline={baseline} is not among the runs {names}")
        return [f"No run is named {wanted}: no significance (name one with --baseline).", ""]
    base = runs[names.index(wanted)]
    with_pldc = _pldc_names(names, pldc_systems)
    having = [r for r in runs if split in r.summaries[0]["splits"]]
    absent = [r.name for r in runs if r not in having]
    if base not in having:
        return [f"{wanted} has no {split}: no significance for {split}.", ""]
    present = [d for d in dimensions if all(d in r.summaries[0]["splits"][split] for r in having)]
    rows: dict[str, dict] = {}
    for dim in present:
        for label, diff in significance_table.differences(
            having,
            base,
            split,
            dim,
            with_pldc,
            n_boot,
            seed,
        ).items():
            rows.setdefault(label, {})[dim] = diff
    header = [f"vs {wanted}"]
    for dim in present:
        header += [f"{dim.capitalize()} ΔO-CCC [95 % CI]", f"{dim.capitalize()} ΔA-CCC [95 % CI]"]
    lines = [f"### {split}: difference from {wanted}", ""]
    if not present or not rows:
        return lines + [f"No dimension with results in every run of {split}.", ""]
    lines += [table_row(header), table_row(["---"] * len(header))]
    fmt = significance_table.format_difference
    for label, per_dim in rows.items():
        cells = [label]
        for dim in present:
            d = per_dim.get(dim, {})
            cells += [fmt(d.get("o_ccc")), fmt(d.get("a_ccc"))]
        lines.append(table_row(cells))
    n = next(iter(next(iter(rows.values())).values()))["o_ccc"].n_speakers
    lines += [
        "",
        f"System minus {wanted} on the same {split} utterances (matched by key), with the 95 % "
        f"percentile interval of {n_boot} paired bootstrap replicates over the {n} test speakers "
        "(each replicate draws the speakers with replacement and keeps all their utterances). "
        "\\* marks an interval that excludes 0; an interval containing 0 means these data cannot "
        "tell the two apart. Runs with several seeds compare seed means on every replicate."
        + (f" Not compared (no {split}): {', '.join(absent)}." if absent else ""),
        "",
    ]
    return lines


def write_comparison(
    summaries: Sequence[Mapping | str | Path | Run],
    path: str | Path,
    splits: Sequence[str] = ("test-b", "test-c"),
    pldc_systems: Sequence[str] | None = None,
    baseline: str | None = None,
    significance: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> Path:
    """Writes the comparison tables of several systems.

    Args:
      summaries: summaries, summary.json paths or `Run`s (several seeds), in row order.
      path: the markdown file.
      splits, pldc_systems: as `comparison_table`.
      baseline, n_boot, seed: as `significance_section`.
      significance: add each split's difference table (needs `Run`s with their report
        folders: give `Run`s or paths).
    """
    runs = [s if isinstance(s, Run) else None for s in summaries]
    loaded = [
        merged_summary(r) if r is not None else s if isinstance(s, Mapping) else load_summary(s)
        for r, s in zip(runs, summaries, strict=True)
    ]
    titles = {"test-b": "test-b (seen speakers, Table 2)", "test-c": "test-c (unseen, Table 3)"}
    lines = ["# Comparison across systems", ""]
    seeds = [f"{r.name}: {r.n_seeds}" for r in runs if r is not None and r.n_seeds > 1]
    if seeds:
        lines += [
            "Cells of runs with several seeds are mean ± sample std over seeds "
            f"(seeds per run: {', '.join(seeds)}); the A-CCC bracket is the seed mean of the "
            "std across speakers.",
            "",
        ]
    for split in splits:
        lines += [f"## {titles.get(split, split)}", ""]
        lines += [comparison_table(loaded, split, pldc_systems), ""]
        if significance:
            if any(r is None for r in runs):
                raise ReportError("significance needs runs with their per-utterance predictions")
            lines += significance_section(
                runs, baseline, split, pldc_systems, n_boot=n_boot, seed=seed
            )
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


def _present_splits(summaries: Sequence[Mapping]) -> list[str]:
    """Split names of any summary, in first-seen order."""
    return list(dict.fromkeys(s for summary in summaries for s in summary["splits"]))


def main(argv: Sequence[str]) -> None:
    """Writes and prints the comparison tables of several runs (paper Tables 2 and 3 shape).

    Usage: `python -m papt_jax.eval.compare --out FILE RUN [RUN ...]`, where each RUN is a
    run's workdir, its `report/` folder, a `summary.json`, or `NAME=DIR1+DIR2+...` (seeds).
    """
    from absl import flags

    args = list(argv[1:])
    if not args:
        raise ReportError(
            "no runs given",
            hint="python -m papt_jax.eval.compare --out comparison.md RUN [RUN ...]",
        )
    runs = [parse_run(a) for a in args]
    summaries = [merged_summary(r) for r in runs]
    present = _present_splits(summaries)
    splits = flags.FLAGS.splits or present
    unknown = [s for s in splits if s not in present]
    if unknown:
        raise ReportError(f"no run has split(s) {unknown}; the runs have {present}")
    out = Path(flags.FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = write_comparison(
        runs,
        out.with_name(out.name + ".partial"),
        splits,
        flags.FLAGS.pldc_systems or None,
        baseline=flags.FLAGS.baseline,
        significance=True,
        n_boot=flags.FLAGS.n_boot,
        seed=flags.FLAGS.bootstrap_seed,
    )
    path.replace(out)  # no half-written table when a run turns out unusable
    print(out.read_text())


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
    flags.DEFINE_string(
        "baseline",
        None,
        "System every other row is compared with (default: the run named Vanilla-FT).",
    )
    flags.DEFINE_integer("n_boot", 2000, "Paired bootstrap replicates.", lower_bound=1)
    flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the bootstrap draws.")


if __name__ == "__main__":
    from papt_jax import cli

    _define_flags()
    cli.run(main)
