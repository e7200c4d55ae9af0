"""The paper's other systems on the shared smoke run: B2 and the fusion ablation table.

Like launch/reproduce_tables.sh, the extra runs reuse the smoke run's corpus, dataset and
bootstrap encoder, so only their own stages run.
"""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures.main_runs import run_main

from papt_jax.eval import ablation, gap
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
        "--config.finetune.dimensions=arousal",
        *shared_flags(smoke_run),
    )
    assert run.returncode == 0, run.stderr[-4000:]
    weights = json.loads((tmp_path / "b2" / "speaker_weights" / "weights.json").read_text())
    table = weights["weights"]
    chosen = set(weights["adaptation_speakers"])
    train = set(weights["train_speakers"])
    assert chosen < train
    # Among training speakers two values: the adaptation set weighs 2x the others (B2's
    # weight); speakers outside training never enter a fine-tuning batch (weight 1).
    up = {round(w, 9) for i, w in enumerate(table) if i in chosen}
    rest = {round(w, 9) for i, w in enumerate(table) if i in train - chosen}
    assert {round(w, 9) for i, w in enumerate(table) if i not in train} == {1.0}
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


class _Speakers:
    """The two things `finetune_speakers` reads from a workspace."""

    def __init__(self, config, train, test_a):
        self.config = config
        self._speakers = {"train": train, "test_a": test_a}

    def record_speakers(self, split):
        return self._speakers[split]


def test_gap_subsets_are_nested_and_speaker_dependent_ones_swap_in_test_a():
    from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config
    from papt_jax.experiment.finetuning import finetune_speakers
    from papt_jax.experiment.settings import ConfigError

    config = apply_embedded_corpus(base_config(), "smoke")
    train = [f"t{i}" for i in range(10) for _ in range(3)]  # 10 speakers, 3 records each
    test_a = ["a1", "a2", "a1"]
    ws = _Speakers(config, train, test_a)
    assert finetune_speakers(ws) == ("train", None)
    subsets = []
    for k in (4, 6, 10):
        config.finetune.train_speakers = k
        splits, speakers = finetune_speakers(ws)
        assert splits == "train" and len(speakers) == k
        subsets.append(speakers)
    assert subsets[0] < subsets[1] < subsets[2]  # nested
    config.finetune.speaker_dependent = True
    config.finetune.train_speakers = 6
    splits, speakers = finetune_speakers(ws)
    assert splits == "train,test_a"
    # The first 6 - 2 speakers of the same order (the K=4 subset) plus test-a's two.
    assert speakers == subsets[0] | {"a1", "a2"}
    config.finetune.train_speakers = 2
    with pytest.raises(ConfigError, match="more than test-a's 2 speakers"):
        finetune_speakers(ws)
    config.finetune.train_speakers = 11
    with pytest.raises(ConfigError, match="has 10 speakers"):
        finetune_speakers(ws)


def _point(k, dependent, value):
    point = {"k": k, "dependent": dependent}
    for dim in ("arousal", "valence"):
        for metric in ("o_ccc", "a_ccc"):
            point[f"{dim}/{metric}"] = value
    return point


def test_gap_table_and_figure(tmp_path):
    points = [_point(10, False, 0.5), _point(10, True, 0.6), _point(20, True, 0.55)]
    with pytest.raises(ReportError, match="K=20 has no SI run"):
        gap.pair_points(points)
    points.append(_point(20, False, 0.54))
    table, figure = gap.write_gap(points, tmp_path / "gap.md")
    text = table.read_text()
    assert "| 10 | 0.500 | 0.600 | +0.100 |" in text
    assert "| 20 | 0.540 | 0.550 | +0.010 |" in text
    assert figure.is_file() and figure.stat().st_size > 0


def test_speaker_dependent_run_trains_on_the_subset_with_test_a(smoke_run, tmp_path):
    run = run_main(
        tmp_path / "sd",
        "--config=configs/personalization_gap.py:smoke",
        "--config.stages=prepare,finetune,evaluate,report",
        "--config.finetune.train_speakers=6",
        "--config.finetune.speaker_dependent=True",
        "--config.finetune.dimensions=arousal",
        *shared_flags(smoke_run),
    )
    assert run.returncode == 0, run.stderr[-4000:]
    facts = json.loads((tmp_path / "sd" / "stages" / "finetune.json").read_text())["facts"]
    arousal = facts["arousal"]
    assert arousal["train_splits"] == "train,test_a" and len(arousal["train_speakers"]) == 6
    point = gap.gap_point(tmp_path / "sd")
    assert point["k"] == 6 and point["dependent"] is True
