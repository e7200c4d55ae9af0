"""The paper's other systems on the shared smoke run: B2 and the fusion ablation table.

Like launch/reproduce_tables.sh, the extra runs reuse the smoke run's corpus, dataset and
bootstrap encoder, so only their own stages run.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_main

from papt_jax.eval import ablation
from papt_jax.eval.results import ReportError

pytestmark = pytest.mark.slow


def shared_flags(smoke_run):
    w = smoke_run.workdir
    return (
        f"--config.data.corpus_dir={w / 'corpus'}",
        "--config.data.synthetic_preset=",
        f"--config.data.data_dir={w / 'data'}",
        f"--config.model.init=converted:{w / 'bootstrap' / 'encoder'}",
    )


def test_b2_weights_the_closest_training_speakers_and_reports_test_b(smoke_run, tmp_path):
    run = run_main(
        tmp_path / "b2",
        "--config=configs/b2.py:smoke",
        "--config.stages=prepare,speaker_weights,finetune,evaluate,report",
        *shared_flags(smoke_run),
    )
    assert run.returncode == 0, run.stderr[-4000:]
    weights = json.loads((tmp_path / "b2" / "speaker_weights" / "weights.json").read_text())
    table = weights["weights"]
    chosen = set(weights["adaptation_speakers"])
    # Two values: adaptation-set speakers weigh 2x the others (B2's weight), mean 1 overall.
    up = {round(w, 9) for i, w in enumerate(table) if i in chosen}
    rest = {round(w, 9) for i, w in enumerate(table) if i not in chosen}
    assert len(up) == 1 and len(rest) == 1
    assert up.pop() == pytest.approx(2 * rest.pop())
    # B2 never saw test-c: no unseen-speaker row.
    summary = json.loads((tmp_path / "b2" / "report" / "summary.json").read_text())
    assert summary["system"] == "B2" and set(summary["splits"]) == {"test-b"}
    assert "stage pretrain" not in run.stderr  # B2 fine-tunes the original encoder


def test_fusion_ablation_table_reads_each_runs_loss_and_a_ccc(smoke_run, tmp_path):
    last = smoke_run.workdir
    # A second finished run that differs in its fusion position (its record and summary
    # edited: the table's job is reading them, which this checks against known values).
    first = tmp_path / "first"
    shutil.copytree(last, first, ignore=shutil.ignore_patterns("data", "corpus", "*checkpoints"))
    config = json.loads((first / "config.json").read_text())
    config["pretrain"]["speaker_fusion"] = "first"
    (first / "config.json").write_text(json.dumps(config))
    record = json.loads((first / "stages" / "pretrain.json").read_text())
    record["facts"]["best_loss"] = 1.25
    (first / "stages" / "pretrain.json").write_text(json.dumps(record))

    rows = [ablation.ablation_row(first), ablation.ablation_row(last)]
    table = ablation.ablation_table(rows)
    lines = table.splitlines()
    assert lines[2].startswith("| Last |") and lines[3].startswith("| First | 1.250 |")
    expected = json.loads((last / "stages" / "pretrain.json").read_text())["facts"]["best_loss"]
    assert f"| {expected:.3f} |" in lines[2]
    summary = json.loads((last / "report" / "summary.json").read_text())
    a = summary["splits"]["test-b"]["arousal"]["system"]
    assert f"{a['a_ccc']:.3f}" in lines[2]
    with pytest.raises(ReportError, match="no finished pre-training"):
        (first / "stages" / "pretrain.json").unlink()
        ablation.ablation_row(first)
