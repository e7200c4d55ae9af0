"""A rerun notices changed inputs and damaged outputs before it reuses a stage.

The corpus and prepare stages are real (the embedded smoke corpus, a few seconds); the
stages after them are fakes that write one file each, so these tests see the runner's
decisions: what is redone, what the log says, and what is left untouched when a redo
cannot start.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os

import pytest

from papt_jax.data import input_pipeline
from papt_jax.errors import UserError
from papt_jax.experiment import run as run_lib
from papt_jax.experiment import stages as stages_lib
from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config

REAL = ("corpus", "prepare")
LATER = tuple(s for s in stages_lib.STAGES if s not in REAL)


def smoke():
    return apply_embedded_corpus(base_config(), "smoke")


@pytest.fixture
def fakes_after_prepare(monkeypatch):
    """Every stage after prepare writes `<workdir>/<stage>/out.txt` and counts its calls."""
    calls: list[str] = []

    def fake(name):
        def run(ws):
            calls.append(name)
            (ws.stage_dir(name) / "out.txt").write_text(name)
            return {"fake": True}

        return run

    def damaged(name):
        def check(ws, facts):
            out = ws.path(name, "out.txt")
            return None if out.is_file() else f"{out} is missing"

        return check

    for name in LATER:
        stage = stages_lib.STAGES[name]
        fake_stage = dataclasses.replace(
            stage,
            run=fake(name),
            outputs=(lambda n: lambda ws: (ws.path(n),))(name),
            damaged=damaged(name),
        )
        monkeypatch.setitem(stages_lib.STAGES, name, fake_stage)
    return calls


def _labels(workdir):
    return workdir / "corpus" / "Labels" / "labels_consensus.csv"


def _train_key(workdir):
    with _labels(workdir).open() as f:
        rows = csv.DictReader(f)
        return next(
            r["FileName"] for r in rows if r["Split_Set"] == "Train" and r["SpkrID"] != "Unknown"
        )


def _edit_label(workdir, key, arousal):
    path = _labels(workdir)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["FileName"] == key:
            r["EmoAct"] = f"{arousal:.4f}"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _arousal(workdir, key):
    source, index = input_pipeline.open_split(workdir / "data", "train")
    return float(source[index.keys.index(key)]["arousal"])


@pytest.mark.slow
def test_an_edited_label_redoes_prepare_and_every_stage_after_it(
    tmp_path, fakes_after_prepare, caplog
):
    run_lib.run(smoke(), tmp_path)
    key = _train_key(tmp_path)
    assert _arousal(tmp_path, key) != pytest.approx(6.5, abs=1e-3)
    fakes_after_prepare.clear()
    _edit_label(tmp_path, key, 6.5)
    with caplog.at_level(logging.INFO):
        run_lib.run(smoke(), tmp_path)
    # Before: all nine stages were reused and the dataset kept the old label.
    assert f"labels file {_labels(tmp_path)} changed" in caplog.text
    assert "stage prepare: starts over: its input files changed" in caplog.text
    assert fakes_after_prepare == list(LATER)
    assert _arousal(tmp_path, key) == pytest.approx(6.5, abs=1e-3)


@pytest.mark.slow
def test_replaced_deleted_and_added_audio_are_named(tmp_path, fakes_after_prepare, caplog):
    config = smoke()
    config.data.on_bad_rows = "skip"  # a row whose audio is missing is left out
    run_lib.run(config, tmp_path)
    audios = tmp_path / "corpus" / "Audios"
    _, index = input_pipeline.open_split(tmp_path / "data", "train")
    wavs = [audios / key for key in index.keys[:3]]
    replaced, deleted = wavs[0], wavs[1]
    original = deleted.read_bytes()
    replaced.write_bytes(wavs[2].read_bytes())
    deleted.unlink()
    fakes_after_prepare.clear()
    with caplog.at_level(logging.INFO):
        run_lib.run(config, tmp_path)
    assert f"1 audio file(s) replaced ({replaced})" in caplog.text
    assert f"1 audio file(s) deleted ({deleted})" in caplog.text
    assert fakes_after_prepare == list(LATER)
    source, index = input_pipeline.open_split(tmp_path / "data", "train")
    assert deleted.name not in index.keys  # left out as missing, as a fresh build does

    caplog.clear()
    deleted.write_bytes(original)
    with caplog.at_level(logging.INFO):
        run_lib.run(config, tmp_path)
    assert f"1 audio file(s) added ({deleted})" in caplog.text


@pytest.mark.slow
def test_nothing_changed_nothing_redone_and_a_touched_file_is_seen(tmp_path, fakes_after_prepare):
    run_lib.run(smoke(), tmp_path)
    fakes_after_prepare.clear()
    run_lib.run(smoke(), tmp_path)
    assert fakes_after_prepare == []
    _, index = input_pipeline.open_split(tmp_path / "data", "validation")
    wav = tmp_path / "corpus" / "Audios" / index.keys[0]
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    run_lib.run(smoke(), tmp_path)
    assert fakes_after_prepare == list(LATER)


@pytest.mark.slow
def test_content_check_sees_bytes_changed_behind_a_kept_time(tmp_path, fakes_after_prepare):
    config = smoke()
    config.data.verify_audio = "content"
    run_lib.run(config, tmp_path)
    _, index = input_pipeline.open_split(tmp_path / "data", "test_b")
    wav = tmp_path / "corpus" / "Audios" / index.keys[0]
    st = wav.stat()
    data = bytearray(wav.read_bytes())
    data[-2:] = bytes([data[-2] ^ 1, data[-1] ^ 1])  # same size, other samples
    wav.write_bytes(bytes(data))
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or rsync -t would
    fakes_after_prepare.clear()
    plain = smoke()
    run_lib.run(plain, tmp_path)  # size and time only: not seen
    assert fakes_after_prepare == []
    run_lib.run(config, tmp_path)
    assert fakes_after_prepare == list(LATER)


@pytest.mark.slow
def test_a_changed_encoder_folder_redoes_the_stages_that_read_it(tmp_path, fakes_after_prepare):
    encoder = tmp_path / "ckpt"
    (encoder / "params").mkdir(parents=True)
    (encoder / "config.json").write_text("{}")
    config = smoke()
    config.model.init = f"converted:{encoder}"
    config.finetune.init = "model"
    config.pseudo_labels.teacher = f"converted:{encoder}"
    run_lib.run(config, tmp_path / "w")
    fakes_after_prepare.clear()
    (encoder / "params" / "shard").write_bytes(b"new weights")
    run_lib.run(config, tmp_path / "w")
    # Every stage whose outputs depend on the encoder (and what read them); prepare not.
    assert "prepare" not in fakes_after_prepare
    assert {"pseudo_labels", "finetune", "evaluate", "report"} <= set(fakes_after_prepare)


def test_a_changed_noise_file_redoes_the_pretraining_that_mixes_it_in(
    tmp_path, fakes_after_prepare, caplog
):
    import numpy as np
    import soundfile

    noise = tmp_path / "noise"
    noise.mkdir()
    for name in ("a.wav", "b.wav"):
        soundfile.write(noise / name, np.full(1600, 0.1, np.float32), 16_000)
    config = smoke()
    config.pretrain.noise_dir = str(noise)
    run_lib.run(config, tmp_path / "w")
    record = (tmp_path / "w" / "stages" / "pretrain.json").read_text()
    assert '"pretrain.noise_dir"' in record  # its fingerprint is part of the record
    fakes_after_prepare.clear()
    run_lib.run(config, tmp_path / "w")
    assert fakes_after_prepare == []
    soundfile.write(noise / "b.wav", np.full(2400, 0.2, np.float32), 16_000)
    with caplog.at_level(logging.INFO):
        run_lib.run(config, tmp_path / "w")
    assert f"pretrain.noise_dir={noise} changed" in caplog.text
    assert "prepare" not in fakes_after_prepare and "pretrain" in fakes_after_prepare


@pytest.mark.slow
def test_missing_outputs_of_a_finished_stage_redo_it_and_its_readers(
    tmp_path, fakes_after_prepare, caplog
):
    run_lib.run(smoke(), tmp_path)
    fakes_after_prepare.clear()
    (tmp_path / "pretrain" / "out.txt").unlink()
    with caplog.at_level(logging.INFO):
        run_lib.run(smoke(), tmp_path)
    # Before: a plain rerun reused everything and exited 0.
    assert "stage pretrain: starts over: its outputs are missing or damaged" in caplog.text
    assert fakes_after_prepare == ["pretrain", "finetune", "evaluate", "report"]


@pytest.mark.slow
def test_a_damaged_dataset_file_redoes_prepare(tmp_path, fakes_after_prepare, caplog):
    run_lib.run(smoke(), tmp_path)
    shard = next((tmp_path / "data").rglob("*-validation.array_record-*"))
    shard.write_bytes(shard.read_bytes()[:1000])
    fakes_after_prepare.clear()
    with caplog.at_level(logging.INFO):
        run_lib.run(smoke(), tmp_path)
    assert f"dataset file {shard} has 1000 bytes" in caplog.text
    assert fakes_after_prepare == list(LATER)


@pytest.mark.slow
def test_a_redo_whose_input_is_missing_removes_nothing(tmp_path, fakes_after_prepare):
    config = smoke()
    run_lib.run(config, tmp_path / "w")
    # The same corpus as a user's own (outside the workdir), then its labels file is lost.
    corpus = tmp_path / "w" / "corpus"
    user = smoke()
    user.data.synthetic_preset = ""
    user.data.corpus_dir = str(corpus)
    user.stages = ",".join(s for s in stages_lib.STAGES if s != "corpus")
    run_lib.run(user, tmp_path / "u")
    _labels(tmp_path / "w").unlink()
    fakes_after_prepare.clear()
    with pytest.raises(UserError, match="no labels file"):
        run_lib.run(user, tmp_path / "u", redo=("prepare",))
    # Before: every later stage's results were deleted, then prepare failed.
    for stage in LATER:
        assert (tmp_path / "u" / stage / "out.txt").is_file(), stage
    assert (tmp_path / "u" / "stages" / "prepare.json").is_file()
    assert fakes_after_prepare == []


@pytest.mark.slow
def test_a_record_that_is_not_an_object_counts_as_not_done(tmp_path, fakes_after_prepare, caplog):
    run_lib.run(smoke(), tmp_path)
    (tmp_path / "stages" / "report.json").write_text("[1, 2]")
    (tmp_path / "stages" / "evaluate.json").write_bytes(b"\xff\xfe not utf-8")
    fakes_after_prepare.clear()
    with caplog.at_level(logging.WARNING):
        run_lib.run(smoke(), tmp_path)
    # Before: AttributeError ('list' object has no attribute 'get') or UnicodeDecodeError.
    assert caplog.text.count("report.json holds a JSON list, not a record") == 1
    assert caplog.text.count("evaluate.json is unreadable") == 1
    assert fakes_after_prepare == ["evaluate", "report"]


def test_a_missing_workdir_encoder_names_the_stage_that_makes_it(tmp_path):
    from papt_jax.experiment.workspace import Workspace

    ws = Workspace(smoke(), tmp_path)
    # Before: "convert a PyTorch checkpoint first", which points at the wrong fix.
    with pytest.raises(UserError, match="stage bootstrap") as info:
        ws.load_encoder("bootstrap")
    assert "stage bootstrap is then redone" in info.value.hint
