"""The speaker-fusion ablation (the paper's Table 4) from finished runs.

    python -m papt_jax.eval.ablation --out table4.md RUN [RUN ...]

Each RUN is the workdir of one PAPT/TAPT run that differs only in
`pretrain.speaker_fusion` ('last', 'first', 'prefix', 'none'). Per run the table gives the
best pre-training validation loss (masked prediction on test-a, from the pretrain stage's
record) and the A-CCC of arousal and valence on test-b (from its report).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.eval.results import ReportError, load_summary
from papt_jax.eval.tables import format_a

# The paper's names for the positions (Table 4).
POSITIONS = {"last": "Last", "first": "First", "prefix": "Prefix", "none": "None (TAPT)"}


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read the {what} ({e})") from e


def ablation_row(workdir: str | Path, split: str = "test-b") -> dict:
    """{'fusion', 'pretrain_loss', 'arousal', 'valence'} of one finished run.

    Raises:
      ReportError: the folder is not a finished run with pre-training and a report.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"{workdir}: no such run folder")
    config = _read_json(workdir / "config.json", "run's config")
    record = workdir / "stages" / "pretrain.json"
    if not record.is_file():
        raise ReportError(f"{workdir} has no finished pre-training (stages/pretrain.json)")
    loss = (_read_json(record, "pre-training record").get("facts") or {}).get("best_loss")
    summary = load_summary(workdir / "report" / "summary.json")
    per_split = summary["splits"].get(split)
    if per_split is None:
        raise ReportError(f"{workdir}: the report has no {split} results")
    row = {"fusion": config["pretrain"]["speaker_fusion"], "pretrain_loss": loss}
    for dim in ("arousal", "valence"):
        system = (per_split.get(dim) or {}).get("system") or {}
        row[dim] = (system.get("a_ccc"), system.get("a_ccc_std"))
    return row


def ablation_table(rows: Sequence[Mapping]) -> str:
    """Markdown: one row per fusion position, in the paper's order."""
    order = list(POSITIONS)
    rows = sorted(rows, key=lambda r: order.index(r["fusion"]) if r["fusion"] in order else 9)
    lines = [
        "| Speaker embedding | Pre-training val. loss | Arousal A-CCC (std) | "
        "Valence A-CCC (std) |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        loss = r["pretrain_loss"]
        shown = "–" if loss is None or not math.isfinite(loss) else f"{loss:.3f}"
        lines.append(
            f"| {POSITIONS.get(r['fusion'], r['fusion'])} | {shown} | "
            f"{format_a(*r['arousal'])} | {format_a(*r['valence'])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    runs = list(argv[1:])
    if not runs:
        raise ReportError("no runs given", hint="python -m papt_jax.eval.ablation --out F RUN...")
    rows = [ablation_row(r) for r in runs]
    fusions = [r["fusion"] for r in rows]
    if len(set(fusions)) != len(fusions):
        raise ReportError(f"two runs share a fusion position: {fusions}")
    text = "# Speaker-fusion ablation (Table 4), test-b\n\n" + ablation_table(rows) + "\n"
    out = Path(flags.FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    from absl import flags

    from papt_jax import cli

    flags.DEFINE_string("out", None, "Markdown file for the table.", required=True)
    cli.run(main)
