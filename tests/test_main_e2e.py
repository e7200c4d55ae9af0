"""End to end: the command-line pipeline on the embedded smoke corpus.

Every test here reads the one shared `smoke_run` (tests/conftest.py); tests that need to
damage a workdir copy it first.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import jax
import numpy as np
import pytest
from fixtures.main_runs import UP_TO_EVALUATE, run_main

from papt_jax.experiment.settings import STAGES

pytestmark = pytest.mark.slow


def test_smoke_pipeline_writes_every_output(smoke_run):
    workdir = smoke_run.workdir
    # The end of the console: stage times, each split's results table, the report's path
    # last; the rest of the report (analyses and their explanations) stays in the file.
    out = smoke_run.stdout.rstrip().splitlines()
    assert out[-1] == f"report: {workdir / 'report' / 'results.md'}"
    summary_start = out.index("stage            wall time")
    assert [line.split()[0] for line in out[summary_start + 1 :][: len(STAGES)]] == list(STAGES)
    tail = "\n".join(out[summary_start:])
    for split in ("test-b", "test-c"):
        assert f"\n{split}:\n|  | Arousal O-CCC | Arousal A-CCC (std) |" in tail
    assert tail.count("| + (μ, σ) shift |") == 2
    assert "How to read the analyses" not in smoke_run.stdout
    assert "retrieval diagnostic" not in smoke_run.stdout
    for stage in STAGES:
        record = json.loads((workdir / "stages" / f"{stage}.json").read_text())
        assert record["wall_s"] >= 0 and record["fingerprint"], stage
    assert (workdir / "pseudo_labels" / "labels.npz").is_file()
    assert (workdir / "pseudo_labels" / "centroids.npy").is_file()
    # The bootstrap encoder's head scores the bootstrap's MFCC clusters, not PAPT's labels.
    pretrain_facts = json.loads((workdir / "stages" / "pretrain.json").read_text())["facts"]
    assert pretrain_facts["head"] == "fresh (pseudo-labels are not the checkpoint's own)"
    encoder_cfg = json.loads((workdir / "pretrain" / "encoder" / "config.json").read_text())
    assert encoder_cfg["speaker_fusion"] == "last" and encoder_cfg["num_speakers"] > 0
    for run in ("bootstrap", "pretrain", "finetune/arousal", "finetune/valence"):
        assert list((workdir / run / "logs").glob("events.*")), run
        assert (workdir / run / "logs" / "metrics.jsonl").stat().st_size > 0, run
    report = workdir / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["splits"]) == {"test-b", "test-c"}
    for split in ("test-b", "test-c"):
        for dim in ("arousal", "valence"):
            for suffix in ("predictions.csv", "per_speaker.csv", "speaker_ccc.png"):
                assert (report / f"{split}_{dim}_{suffix}").is_file()
    assert "## test-c" in (report / "results.md").read_text()
    # No leftovers of atomic writes.
    assert not list(workdir.rglob("*.partial"))


def test_logs_are_quiet_and_say_what_matters(smoke_run):
    log = smoke_run.stderr
    # Piped (not a terminal): progress as plain lines, never carriage-return redraws; on a
    # loaded machine a stage can outlast the 30 s between progress lines, so besides log
    # lines only progress's own plain lines may appear.
    assert "\r" not in log
    others = [line for line in log.splitlines() if not line[:4].isdigit()]
    progress_line = re.compile(r"^[\w\[\]/ .-]+: \d+(/\d+)? .*elapsed")
    assert all(progress_line.match(line) for line in others), others[:3]
    assert "libtpu" not in log
    assert "Downloading" not in log and "downloaded and prepared" not in log
    # Orbax's INFO chatter (dozens of lines per checkpoint) is filtered out by default, and
    # none of its warnings that read like problems ("Metadata file does not exist", a type
    # handler "overriding" another) is left.
    assert "checkpoint_manager.py" not in log
    assert " WARNING absl: " not in log
    # Pre-training batches are cropped to their shortest row (fairseq's pad_audio: false),
    # in the bootstrap and in PAPT, and the log says how much audio that costs.
    assert log.count("crop_to_shortest: ") >= 2
    for number, stage in enumerate(STAGES, 1):
        assert f"stage {stage}: starting ({number} of {len(STAGES)}: " in log, stage
        assert f"stage {stage}: done in" in log, stage
    # One line about PAPT's head, not two that contradict each other (the bootstrap, a
    # from-scratch encoder, has none to reuse).
    assert log.count("the initial checkpoint has no pre-training head") == 1
    assert log.count("pretrain: fresh pre-training head") == 1
    # The bootstrap's MFCC labels are named as such, the pseudo-labels stage's as its own.
    bootstrap = log[log.index("stage bootstrap: starting") : log.index("stage bootstrap: done")]
    assert "bootstrap: MFCC labels: labelled" in bootstrap and "pseudo-labels" not in bootstrap
    stage = log[log.index("stage pseudo_labels: starting") : log.index("stage pseudo_labels: done")]
    assert "pseudo-labels: labelled" in stage


def test_files_and_logs_name_speakers_by_id(smoke_run):
    workdir = smoke_run.workdir
    path = workdir / "data/papt_msp_podcast/1.0.0/speakers.json"
    ids = json.loads(path.read_text())["speakers"]
    with np.load(workdir / "evaluate" / "passes" / "arousal.npz") as z:
        unseen, proxy_index = z["test_c/speaker_id"].astype(str), z["test_c/speaker"]
    proxies = {u: ids[int(i)] for u, i in zip(unseen, proxy_index, strict=True)}
    order = sorted(proxies, key=int)
    shown = "{" + ", ".join(f"'{u}': '{proxies[u]}'" for u in order) + "}"
    assert f"test-c: proxy training speaker of each unseen speaker: {shown}" in smoke_run.stderr
    # Once, not once per dimension: the proxies come from the original encoder.
    assert smoke_run.stderr.count("proxy training speaker of each unseen speaker") == 1
    rows = (workdir / "report" / "test-c_arousal_per_speaker.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == order  # numeric ids by number


def test_the_evaluation_fingerprint_covers_the_models_it_evaluated(smoke_run):
    from papt_jax.experiment.evaluation import evaluation_fingerprint

    stages = smoke_run.workdir / "stages"
    records = {s: json.loads((stages / f"{s}.json").read_text()) for s in STAGES}
    record = records["evaluate"]
    shown = evaluation_fingerprint(record, records.get)
    results_md = (smoke_run.workdir / "report" / "results.md").read_text()
    assert f"evaluation fingerprint = {shown}" in results_md
    assert shown != record["fingerprint"]  # not the evaluate stage's settings alone
    # Evaluating models fine-tuned, or pre-trained (read through fine-tuning), with other
    # settings is another evaluation; the evaluate record itself is unchanged.
    for stage in ("finetune", "pretrain", "pseudo_labels", "prepare"):
        other = {**records, stage: {**records[stage], "fingerprint": "other settings"}}
        assert evaluation_fingerprint(record, other.get) != shown, stage
    # Records with the same settings (a resumed run's new record ids) keep it.
    renamed = {s: {**r, "id": "new"} for s, r in records.items()}
    assert evaluation_fingerprint(record, renamed.get) == shown


def copy_run(smoke_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(smoke_run.workdir, workdir, symlinks=True)
    return workdir


def results_of(workdir):
    out = {}
    for path in sorted((workdir / "evaluate").glob("*.npz")):
        with np.load(path) as z:
            out[path.name] = {k: z[k] for k in z.files}
    return out


def assert_same_results(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")


def test_a_finished_run_is_reused_and_a_changed_one_is_redone(smoke_run, tmp_path):
    workdir = copy_run(smoke_run, tmp_path)
    start = time.time()
    again = run_main(workdir, "--config=configs/papt.py:smoke")
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("done earlier with the same settings, reused") == len(STAGES)
    assert "earlier run, reused" in again.stdout and "| PAPT-FT |" in again.stdout
    assert time.time() - start < 600  # no training: a reused run only imports and prints

    # Up to evaluate: that the report follows a redone evaluation is the stage graph's
    # (tests/test_experiment_run.py), and re-drawing its figures would add 10 s here.
    changed = run_main(
        workdir,
        "--config=configs/papt.py:smoke",
        "--config.evaluate.pldc_k=2",
        f"--config.stages={','.join(UP_TO_EVALUATE)}",
    )
    assert changed.returncode == 0, changed.stderr[-4000:]
    assert "evaluate.pldc_k: 3 -> 2" in changed.stderr
    assert "stage evaluate: starting" in changed.stderr
    assert "stage finetune: starting" not in changed.stderr
    assert "done earlier with the same settings, reused" in changed.stderr
    config = json.loads((workdir / "config.json").read_text())
    assert config["evaluate"]["pldc_k"] == 2
    assert len(list((workdir / "config_history").iterdir())) == 1


def _kill_inside_report(w):
    (w / "stages" / "report.json").unlink()
    shutil.rmtree(w / "report")
    (w / "report.partial").mkdir()
    (w / "report.partial" / "results.md").write_text("half")


def _kill_inside_evaluate(w):
    for stage in ("evaluate", "report"):
        (w / "stages" / f"{stage}.json").unlink()
    shutil.rmtree(w / "report")
    (w / "evaluate").rename(w / "evaluate.partial")
    (next((w / "evaluate.partial").glob("*.npz"))).write_bytes(b"PK\x03\x04 half")


def _kill_inside_finetune(w):
    """Valence killed after its best checkpoint was saved, before its latest."""
    for stage in ("finetune", "evaluate", "report"):
        (w / "stages" / f"{stage}.json").unlink()
    for d in ("evaluate", "report"):
        shutil.rmtree(w / d)
    valence = w / "finetune" / "valence"
    shutil.rmtree(valence / "model")
    (valence / "result.json").unlink()
    latest = valence / "checkpoints" / "latest"
    steps = sorted((p for p in latest.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(steps[-1])


def _kill_inside_pretrain(w):
    """Killed while the adapted encoder was being written."""
    for stage in ("pretrain", "finetune", "evaluate", "report"):
        (w / "stages" / f"{stage}.json").unlink()
    for d in ("finetune", "evaluate", "report"):
        shutil.rmtree(w / d)
    encoder = w / "pretrain" / "encoder"
    encoder.rename(encoder.with_name("encoder.partial"))
    (encoder.with_name("encoder.partial") / "config.json").unlink()


def assert_same_tree(a, b):
    """Two parameter trees hold the same leaves, bit for bit."""
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    flat_a = jax.tree_util.tree_leaves_with_path(a)
    assert len(flat_a) == len(flat_b) and flat_a
    for path, value in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_b[path]), np.asarray(value), err_msg=path)


def _encoder_of(stage):
    def read(w):
        from papt_jax.convert import load_converted

        return load_converted(w / stage / "encoder").params

    return read


def finetuned_of(w, dimensions=("arousal", "valence")):
    """Each dimension's fine-tuned variables and `result.json`."""
    from papt_jax.train.checkpoint import restore_tree

    return {
        dimension: (
            restore_tree(w / "finetune" / dimension / "model" / "variables"),
            json.loads((w / "finetune" / dimension / "result.json").read_text()),
        )
        for dimension in dimensions
    }


def assert_same_finetuned(a, b):
    assert a.keys() == b.keys()
    for dimension, (variables, result) in a.items():
        assert_same_tree(variables, b[dimension][0])
        assert b[dimension][1] == result, dimension


# Each kill is resumed by the same command limited to the killed stage, and its output must
# equal the uninterrupted run's bit for bit: every later stage reads only that output, and
# is itself deterministic (its own kill here resumes it to the same output), so the whole
# resumed run equals the uninterrupted one. The report's own output is results.md.
@pytest.mark.parametrize(
    "kill, stage, outputs, assert_same",
    [
        (_kill_inside_report, "report", results_of, assert_same_results),
        (_kill_inside_evaluate, "evaluate", results_of, assert_same_results),
        (_kill_inside_finetune, "finetune", finetuned_of, assert_same_finetuned),
        (_kill_inside_pretrain, "pretrain", _encoder_of("pretrain"), assert_same_tree),
    ],
    ids=["report", "evaluate", "finetune-between-best-and-latest", "pretrain-encoder-write"],
)
def test_a_killed_run_resumes_to_identical_results(
    smoke_run, tmp_path, kill, stage, outputs, assert_same
):
    workdir = copy_run(smoke_run, tmp_path)
    expected = outputs(workdir)
    kill(workdir)
    resumed = run_main(workdir, "--config=configs/papt.py:smoke", f"--config.stages={stage}")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"stage {stage}: starting" in resumed.stderr
    assert_same(expected, outputs(workdir))
    assert not list(workdir.rglob("*.partial"))
    if stage == "report":
        assert (workdir / "report" / "results.md").read_text() == (
            smoke_run.workdir / "report" / "results.md"
        ).read_text()


# Kills inside the early stages: the same command limited to that stage must rebuild
# exactly what the uninterrupted run wrote (everything after it reads only that output,
# and the later stages' kills above show those resume to identical results).

STAGE_ORDER = list(STAGES)


def _forget_from(w, stage):
    """Records of `stage` and everything after it are gone; `stage` was started."""
    for later in STAGE_ORDER[STAGE_ORDER.index(stage) :]:
        record = w / "stages" / f"{later}.json"
        if record.exists():
            record.unlink()
        if later != stage:
            started = w / "stages" / f"{later}.started.json"
            if started.exists():
                started.unlink()


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_kill_inside_corpus_generation_regenerates_the_same_corpus(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    expected = _files(w / "corpus")
    _forget_from(w, "corpus")
    (w / "corpus").rename(w / "corpus.partial")
    for wav in list((w / "corpus.partial" / "Audios").glob("*.wav"))[::2]:
        wav.write_bytes(wav.read_bytes()[:100])  # half-written files
    run = run_main(w, "--config=configs/papt.py:smoke", "--config.stages=corpus")
    assert run.returncode == 0, run.stderr[-4000:]
    assert _files(w / "corpus") == expected
    assert not (w / "corpus.partial").exists()


def _records(data_dir):
    """Every split's records, field by field (array_record files are equal in content,
    not byte for byte: their chunk encoding differs between builds)."""
    from papt_jax.data import input_pipeline

    out = {}
    for split in STAGE_SPLITS:
        source, index = input_pipeline.open_split(data_dir, split)
        out[split] = (index.keys, [{k: np.asarray(v) for k, v in r.items()} for r in source])
    return out


STAGE_SPLITS = ("train", "validation", "test_a", "test_b", "test_c")


def test_kill_inside_dataset_build_rebuilds_the_same_records(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    dataset = w / "data" / "papt_msp_podcast" / "1.0.0"
    expected = _records(w / "data")
    _forget_from(w, "prepare")
    # TFDS writes into an incomplete.* folder first; a kill leaves it (and no index).
    shutil.rmtree(dataset)
    (w / "data" / "papt_msp_podcast" / "incomplete.X1_1.0.0").mkdir(parents=True)
    run = run_main(w, "--config=configs/papt.py:smoke", "--config.stages=prepare")
    assert run.returncode == 0, run.stderr[-4000:]
    rebuilt = _records(w / "data")
    for split in STAGE_SPLITS:
        assert rebuilt[split][0] == expected[split][0], split
        for got, want in zip(rebuilt[split][1], expected[split][1], strict=True):
            assert got.keys() == want.keys()
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{split}:{key}")
    assert not list((w / "data").rglob("incomplete.*"))


def test_kill_while_writing_bootstrap_labels_resumes_to_the_same_encoder(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    expected = _encoder_of("bootstrap")(w)
    _forget_from(w, "bootstrap")
    labels = w / "bootstrap" / "pseudo_labels"
    labels.rename(labels.with_name("pseudo_labels.partial"))
    (labels.with_name("pseudo_labels.partial") / "labels.npz").write_bytes(b"PK\x03\x04")
    shutil.rmtree(w / "bootstrap" / "encoder")
    run = run_main(w, "--config=configs/papt.py:smoke", "--config.stages=bootstrap")
    assert run.returncode == 0, run.stderr[-4000:]
    assert_same_tree(expected, _encoder_of("bootstrap")(w))


def test_kill_inside_pseudo_labelling_recomputes_the_same_labels(smoke_run, tmp_path):
    w = copy_run(smoke_run, tmp_path)
    with np.load(w / "pseudo_labels" / "labels.npz") as z:
        expected = {k: z[k] for k in z.files}
    _forget_from(w, "pseudo_labels")
    (w / "pseudo_labels").rename(w / "pseudo_labels.partial")
    run = run_main(w, "--config=configs/papt.py:smoke", "--config.stages=pseudo_labels")
    assert run.returncode == 0, run.stderr[-4000:]
    with np.load(w / "pseudo_labels" / "labels.npz") as z:
        got = {k: z[k] for k in z.files}
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
