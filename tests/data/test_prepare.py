"""The TFDS builder (papt_jax.data.prepare) and its command line."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from absl import flags
from fixtures.corpus_files import row, write_corpus, write_labels, write_wav
from fixtures.msp_releases import write_two_releases

from papt_jax.data import msp_podcast as mp
from papt_jax.data import prepare

# A float wav at 0.6 of full scale, stored by the builder as int16 at that scale.
FLOAT_TONE = 0.6 * np.sin(2 * np.pi * 300 * np.arange(3200) / 16000)

# ----------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A corpus with bad files of each kind and a new release, built once for these tests."""
    tmp = tmp_path_factory.mktemp("prep")
    rows = [
        row("tr_a.wav", 1, "Train", act=2.5, val=5.5, dom=3.5, gender="Male"),
        row("tr_b.wav", 2, "Train"),
        row("tr_bad.wav", 2, "Train"),
        row("tr_float.wav", 2, "Train"),
        row("tr_nan.wav", 2, "Train"),
        row("tr_silent.wav", 2, "Train"),
        row("tr_loud.wav", 2, "Train"),
        row("tr_cut.wav", 2, "Train"),
        row("dev_a.wav", 3, "Development"),
        row("te_a.wav", 4, "Test1"),
        row("te_b.wav", 4, "Test1"),
        row("te_short.wav", 4, "Test1"),
    ]
    lengths = {
        "tr_a.wav": 4000,
        "tr_b.wav": 1200,
        "dev_a.wav": 800,
        "te_a.wav": 16000,
        "te_b.wav": 4800,
    }
    root = write_corpus(tmp / "corpus", rows, lengths)
    (root / "Audios" / "tr_bad.wav").write_bytes(b"garbage bytes, not audio")
    write_wav(root / "Audios" / "te_short.wav", 100)
    audios = root / "Audios"
    soundfile.write(str(audios / "tr_float.wav"), FLOAT_TONE, 16000, subtype="FLOAT")
    soundfile.write(str(audios / "tr_nan.wav"), np.r_[FLOAT_TONE, np.nan], 16000, subtype="FLOAT")
    soundfile.write(str(audios / "tr_silent.wav"), np.zeros(2000), 16000, subtype="PCM_16")
    soundfile.write(str(audios / "tr_loud.wav"), 2 * FLOAT_TONE, 16000, subtype="FLOAT")
    cut = (audios / "tr_cut.wav").read_bytes()
    (audios / "tr_cut.wav").write_bytes(cut[: len(cut) - 1000])
    write_wav(root / "Audios" / "new_a.wav", 2000, seed=9)
    write_labels(
        root / "Labels_new" / "labels_consensus.csv",
        [row("new_a.wav", 8, "Test1"), row("te_a.wav", 4, "Test1")],
    )
    config = mp.CorpusConfig(
        corpus_dir=root, new_labels_file="Labels_new/labels_consensus.csv", test_a_seconds=1.0
    )
    out = prepare.prepare(config, tmp / "data")
    return config, tmp / "data", out


def test_builder_writes_all_splits_and_side_files(built, capsys):
    config, data_dir, out = built
    assert out == data_dir / "papt_msp_podcast" / "1.0.0"
    splits = {p.name.split("-")[1].split(".")[0] for p in out.glob("*.array_record-*")}
    assert splits == {"train", "validation", "test_a", "test_b", "test_c"}
    skipped = json.loads((out / "skipped.json").read_text())
    assert {(s["key"], s["reason"]) for s in skipped} == {
        ("tr_bad.wav", "corrupt"),
        ("te_short.wav", "too_short"),
        ("tr_cut.wav", "truncated"),
        ("tr_nan.wav", "non_finite"),
        ("tr_silent.wav", "silent"),
        ("tr_loud.wav", "clipping"),
    }
    assert all(s["detail"] and s["path"].endswith(s["key"]) for s in skipped)
    assert json.loads((out / "speakers.json").read_text()) == {"speakers": ["1", "2", "3", "4"]}
    index = json.loads((out / "index" / "test_a.json").read_text())
    (record_file,) = out.glob("papt_msp_podcast-test_a.array_record-*")
    assert index == {
        "keys": ["te_a.wav"],
        "num_samples": [16000],
        "speakers": ["4"],
        "files": {record_file.name: record_file.stat().st_size},
    }
    assert (data_dir / "duration_cache.json").is_file()
    assert not (config.corpus_dir / "duration_cache.json").exists()


def test_records_match_the_corpus(built):
    import tensorflow_datasets as tfds

    config, data_dir, _ = built
    train = tfds.data_source(
        prepare.DATASET_NAME, split="train", data_dir=str(data_dir), download=False
    )
    records = {r["key"].decode(): r for r in (train[i] for i in range(len(train)))}
    assert sorted(records) == ["tr_a.wav", "tr_b.wav", "tr_float.wav"]
    # Float audio at full 16-bit scale (peak ~0.6 * 32768), not cast to near-silence.
    stored = records["tr_float.wav"]["audio"]
    np.testing.assert_array_equal(stored, np.round(FLOAT_TONE.astype(np.float32) * 32768))
    assert 19000 < np.abs(stored).max() < 20000
    rec = records["tr_a.wav"]
    expected = soundfile.read(str(config.corpus_dir / "Audios" / "tr_a.wav"), dtype="int16")[0]
    np.testing.assert_array_equal(rec["audio"], expected)
    assert rec["audio"].dtype == np.int16 and rec["num_samples"] == 4000
    assert rec["speaker"] == b"1" and rec["speaker_index"] == 0 and rec["gender"] == b"Male"
    np.testing.assert_allclose([rec["arousal"], rec["valence"], rec["dominance"]], [2.5, 5.5, 3.5])
    test_c = tfds.data_source(
        prepare.DATASET_NAME, split="test_c", data_dir=str(data_dir), download=False
    )
    assert [r["key"] for r in test_c] == [b"new_a.wav"]
    assert test_c[0]["speaker_index"] == -1
    test_b = tfds.data_source(
        prepare.DATASET_NAME, split="test_b", data_dir=str(data_dir), download=False
    )
    assert [r["key"] for r in test_b] == [b"te_b.wav"]


def test_rebuild_reuses_or_refuses(built):
    config, data_dir, out = built
    assert prepare.prepare(config, data_dir) == out
    with pytest.raises(prepare.PrepareError, match="differing: new_labels_file, test_a_seconds"):
        prepare.prepare(mp.CorpusConfig(corpus_dir=config.corpus_dir, test_a_seconds=5.0), data_dir)


def _cli_flags(*args: str) -> flags.FlagValues:
    """The CLI's flags parsed from `args`, in their own FlagValues (not the global one)."""
    fv = flags.FlagValues()
    prepare.define_flags(fv)
    fv(["prepare", *args])
    return fv


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papt_jax.data.prepare", *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_cli_without_new_release_and_bad_audio_error(tmp_path, capsys):
    rows = [
        row("a.wav", 1, "Train"),
        row("b.wav", 2, "Development"),
        row("c.wav", 3, "Test1"),
        row("d.wav", 3, "Test1"),
    ]
    root = write_corpus(tmp_path / "corpus", rows)
    write_wav(root / "Audios" / "d.wav", 1600, rate=22050)
    data = tmp_path / "data"
    prepare.prepare_from_flags(
        _cli_flags("--corpus_dir", str(root), "--out", str(data), "--test_a_seconds=0.05")
    )
    printed = capsys.readouterr().out
    assert "test_c not built" in printed
    assert "skipped 1 audio file(s) {'wrong_sample_rate': 1}" in printed
    out = prepare.dataset_dir(data)
    assert not list(out.glob("*test_c*")) and not list(out.glob("*test_b*"))
    with pytest.raises(mp.BadAudioError, match="wrong_sample_rate"):
        prepare.prepare_from_flags(
            _cli_flags("--corpus_dir", str(root), "--out", str(data) + "2", "--on_bad_audio=error")
        )
    resampled = _cli_flags(
        "--corpus_dir", str(root), "--out", str(data) + "3", "--resample", "--test_a_seconds=0.05"
    )
    prepare.prepare_from_flags(resampled)
    index = json.loads((prepare.dataset_dir(str(data) + "3") / "index" / "test_b.json").read_text())
    assert index["keys"] == ["d.wav"] and index["num_samples"] == [1161]  # 1600 * 16000/22050


def test_bad_audio_found_while_reading_is_a_bad_audio_error_under_error(tmp_path):
    rows = [row("a.wav", 1, "Train"), row("b.wav", 2, "Development"), row("c.wav", 3, "Test1")]
    root = write_corpus(tmp_path / "corpus", rows)
    soundfile.write(str(root / "Audios" / "a.wav"), np.zeros(1600), 16000, subtype="FLOAT")
    config = mp.CorpusConfig(corpus_dir=root, on_bad_audio="error")
    with pytest.raises(mp.BadAudioError, match="a.wav: silent"):
        prepare.prepare(config, tmp_path / "data")


def test_two_release_folders_side_by_side(tmp_path):
    releases = write_two_releases(tmp_path / "corpora")
    data = tmp_path / "data"
    out = prepare.prepare_from_flags(
        _cli_flags(
            f"--corpus_dir={releases.old}",
            f"--new_corpus_dir={releases.new}",
            f"--out={data}",
            "--test_a_seconds=0.1",
        )
    )
    index = json.loads((out / "index" / "test_c.json").read_text())
    assert sorted(index["keys"]) == sorted(releases.test_c_keys)
    import tensorflow_datasets as tfds

    test_c = tfds.data_source(prepare.DATASET_NAME, split="test_c", data_dir=str(data))
    for record in test_c:
        key = record["key"].decode()
        expected = soundfile.read(str(releases.new / "Audios" / key), dtype="int16")[0]
        np.testing.assert_array_equal(record["audio"], expected)
    built = json.loads((out / "build_config.json").read_text())
    assert built["new_corpus_dir"] == str(releases.new.resolve())


def test_cli_user_errors_print_one_line_and_exit_2(tmp_path):
    releases = write_two_releases(tmp_path / "corpora")
    cases = [
        (["--corpus_dir", str(tmp_path / "nope"), "--out", str(tmp_path / "d1")], "does not exist"),
        (
            [f"--corpus_dir={releases.old}", f"--out={tmp_path / 'd2'}", "--test_splits=Test"],
            "data.test_splits='Test' matches no row",
        ),
        (["--out", str(tmp_path / "d3")], "corpus_dir"),
    ]
    stderr = []
    for args, expected in cases:
        proc = _run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        # Progress logs may precede it; the error itself is one line (plus its hint).
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
        stderr.append(proc.stderr)
    assert "Split_Set values present: Test1, Test2, Train, Validation" in stderr[1]
    assert "hint: set data.test_splits (--test_splits)" in stderr[1]


def test_a_truncated_record_file_is_named_before_anything_reads_it(built, tmp_path):
    import shutil

    from papt_jax.data import input_pipeline

    _, data_dir, _ = built
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    out = prepare.dataset_dir(copy)
    (record_file,) = out.glob("papt_msp_podcast-train.array_record-*")
    size = record_file.stat().st_size
    with record_file.open("r+b") as f:  # what an interrupted copy leaves
        f.truncate(size // 2)
    with pytest.raises(input_pipeline.DatasetDamagedError) as err:
        input_pipeline.open_split(copy, "train")
    assert str(record_file) in err.value.message and f"not {size}" in err.value.message
    assert "--redo=prepare" in err.value.hint
    record_file.unlink()
    with pytest.raises(input_pipeline.DatasetDamagedError, match="is missing"):
        input_pipeline.open_split(copy, "train")


# ----------------------------------------------------------------------------- readers


def _files(out):
    """Every file of a built dataset by relative path: its bytes (JSON files parsed)."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = str(path.relative_to(out))
        files[name] = json.loads(path.read_text()) if path.suffix == ".json" else path.read_bytes()
    return files


def test_records_do_not_depend_on_the_number_of_readers(built, tmp_path, capsys):
    config, _, out = built
    capsys.readouterr()
    two = prepare.prepare(config, tmp_path / "data", readers=2)
    printed = capsys.readouterr().out
    assert "with 2 reader(s)" in printed and "skipped 6 audio file(s)" in printed
    one, many = _files(out), _files(two)
    # The corpus path is the same, so even build_config.json matches; records are written
    # by a deterministic encoder, so the record files are identical byte for byte.
    assert one.keys() == many.keys()
    for name in one:
        if name != "dataset_info.json":  # it names the module that built it
            assert one[name] == many[name], name
    assert one["dataset_info.json"]["splits"] == many["dataset_info.json"]["splits"]
    # The skip report keeps the order a one-by-one build meets the files in: header
    # problems first, then sample problems in corpus order.
    assert [(s["key"], s["reason"]) for s in many["skipped.json"]] == [
        ("tr_bad.wav", "corrupt"),  # header problems in labels-file order
        ("tr_cut.wav", "truncated"),
        ("te_short.wav", "too_short"),
        ("tr_loud.wav", "clipping"),  # sample problems in record-generation order
        ("tr_nan.wav", "non_finite"),
        ("tr_silent.wav", "silent"),
    ]


def test_first_bad_file_in_corpus_order_is_the_error_with_several_readers(tmp_path):
    rows = [row(f"tr_{i:02d}.wav", 1 + i % 3, "Train") for i in range(12)]
    rows += [row("dev_a.wav", 4, "Development"), row("te_a.wav", 5, "Test1")]
    root = write_corpus(tmp_path / "corpus", rows)
    audios = root / "Audios"
    soundfile.write(str(audios / "tr_07.wav"), np.zeros(1600), 16000, subtype="PCM_16")
    soundfile.write(str(audios / "tr_09.wav"), 3 * FLOAT_TONE, 16000, subtype="FLOAT")
    soundfile.write(str(audios / "dev_a.wav"), np.zeros(1600), 16000, subtype="PCM_16")
    config = mp.CorpusConfig(corpus_dir=root, on_bad_audio="error")
    for readers in (1, 2):
        with pytest.raises(mp.BadAudioError) as err:
            prepare.prepare(config, tmp_path / f"data{readers}", readers=readers)
        assert [(p.key, p.reason) for p in err.value.problems] == [("tr_07.wav", "silent")]
        assert not prepare.dataset_dir(tmp_path / f"data{readers}").exists()


def test_a_split_whose_audio_all_fails_is_named(tmp_path):
    rows = [row("a.wav", 1, "Train"), row("b.wav", 2, "Development"), row("c.wav", 3, "Test1")]
    root = write_corpus(tmp_path / "corpus", rows)
    soundfile.write(str(root / "Audios" / "b.wav"), np.zeros(1600), 16000, subtype="PCM_16")
    with pytest.raises(prepare.PrepareError, match=r"split validation: all 1 .*'silent': 1"):
        prepare.prepare(mp.CorpusConfig(corpus_dir=root), tmp_path / "data")


def test_a_build_leaves_nothing_in_the_temporary_folder(tmp_path, monkeypatch):
    # TFDS's bucket lookup used to leave one empty tmp*tfds folder there per build.
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    rows = [row("a.wav", 1, "Train"), row("b.wav", 2, "Development"), row("c.wav", 3, "Test1")]
    root = write_corpus(tmp_path / "corpus", rows)
    out = prepare.prepare(mp.CorpusConfig(corpus_dir=root), tmp_path / "data")
    assert (out / "index" / "train.json").is_file()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_file_that_changes_between_the_passes_stops_the_build(tmp_path):
    from papt_jax.data import shard_jobs, tf_example

    path = tmp_path / "a.wav"
    write_wav(path, 1600)
    builder = prepare.PaptMspPodcast(data_dir=str(tmp_path / "d"), file_format="array_record")
    fields = tf_example.fields_from_features(builder.info.features.get_serialized_info())
    reading = shard_jobs.Reading(
        fields, "audio", "num_samples", 16000, False, "error", "array_record"
    )
    values = {"key": "a.wav", "speaker": "1", "speaker_index": 0, "gender": "Male"}
    values.update(arousal=4.0, valence=4.0, dominance=4.0)
    source = shard_jobs.Source("a.wav", str(path), 0.1, values)
    measured = shard_jobs.measure(reading, source)
    assert measured.num_samples == 1600
    out = tmp_path / "shard"
    assert shard_jobs.write_shard(reading, str(out), [source], [measured]) == 1
    write_wav(path, 1700)
    with pytest.raises(shard_jobs.AudioChanged, match="a.wav: was"):
        shard_jobs.write_shard(reading, str(out), [source], [measured])


@pytest.mark.parametrize(
    "fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "PCM_24")]
)
def test_write_pass_reads_checked_files_as_read_audio_does(tmp_path, fmt, subtype):
    from papt_jax.data import audio, shard_jobs

    rng = np.random.default_rng(0)
    samples = np.r_[-1.0, 32767 / 32768, rng.uniform(-1, 1, 4000)]
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(str(path), samples, 16000, format=fmt, subtype=subtype)
    reading = shard_jobs.Reading((), "audio", "num_samples", 16000, False, "error", "array_record")
    source = shard_jobs.Source("a", str(path), 0.25, {})
    checked = shard_jobs._example(reading, source, checked=True)["audio"]
    assert checked.dtype == np.int16
    np.testing.assert_array_equal(checked, audio.read_audio(path))


def test_audio_changed_between_the_passes_is_a_prepare_error(tmp_path, monkeypatch):
    from papt_jax.data import shard_jobs, split_writer

    rows = [row("a.wav", 1, "Train"), row("b.wav", 2, "Development"), row("c.wav", 3, "Test1")]
    root = write_corpus(tmp_path / "corpus", rows)

    def measured_before_a_change(reading, source):
        return dataclasses.replace(shard_jobs.measure(reading, source), num_bytes=1)

    monkeypatch.setattr(split_writer, "measure", measured_before_a_change)
    with pytest.raises(prepare.PrepareError, match="a.wav: was Measured") as err:
        prepare.prepare(mp.CorpusConfig(corpus_dir=root), tmp_path / "data", readers=1)
    assert "build again" in err.value.hint
    assert not prepare.dataset_dir(tmp_path / "data").exists()


def test_progress_bar_shows_audio_hours_and_x_real_time():
    import io

    from papt_jax.data import split_writer

    class Terminal(io.StringIO):  # the bar's look on a terminal (elsewhere: plain lines)
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with split_writer._AudioBar("writing", [3600.0, 3600.0], file=stream) as bar:
        bar.add(3600.0)
        bar.refresh()
    assert "writing:  50%" in stream.getvalue()
    assert "1.00/2.00 audio-h" in stream.getvalue() and "x real time]" in stream.getvalue()
    # 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1 in floating point; items finishing in another order
    # still fill the bar exactly (tqdm warns when a count passes its total).
    with split_writer._AudioBar("w", [0.1, 0.2, 0.3], file=Terminal()) as bar:
        for seconds in (0.3, 0.2, 0.1):
            bar.add(seconds)
        assert bar.n == bar.total


def test_default_readers_follow_the_cores_and_the_amount_of_audio(monkeypatch):
    from papt_jax.data import split_writer

    monkeypatch.setattr(split_writer, "available_cores", lambda: 4)
    per_reader = split_writer.AUDIO_SECONDS_PER_READER
    assert split_writer.default_readers(10.0) == 1
    assert split_writer.default_readers(2.5 * per_reader) == 2
    assert split_writer.default_readers(400 * 3600.0) == 4
    assert _cli_flags("--corpus_dir=c", "--out=o").readers is None
    assert _cli_flags("--corpus_dir=c", "--out=o", "--readers=3").readers == 3
    with pytest.raises(flags.IllegalFlagValueError):
        _cli_flags("--corpus_dir=c", "--out=o", "--readers=0")


# ------------------------------------------------------------- against TFDS's own writer


def _tfds_reference_build(config, data_dir):
    """Builds `config` the way TFDS's `GeneratorBasedBuilder` does: the examples made one by
    one (as the builder did before it had readers) and written by TFDS's own writer."""
    import tensorflow_datasets as tfds

    from papt_jax.data import audio

    class PaptMspPodcast(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = prepare.PaptMspPodcast.VERSION
        _checksums_path = None
        _info = prepare.PaptMspPodcast._info

        def _split_generators(self, dl_manager):
            corpus = mp.load_corpus(config)
            return {name: self._generate_examples(u) for name, u in corpus.splits.items() if u}

        def _generate_examples(self, utterances):
            for utt in utterances:
                try:
                    samples = audio.read_audio(utt.path)
                except audio.AudioError:
                    continue
                yield (
                    utt.key,
                    {
                        "key": utt.key,
                        "audio": samples,
                        "speaker": utt.speaker_id,
                        "speaker_index": utt.speaker_index,
                        "arousal": utt.arousal,
                        "valence": utt.valence,
                        "dominance": utt.dominance,
                        "gender": utt.gender,
                        "num_samples": samples.shape[0],
                    },
                )

    builder = PaptMspPodcast(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return prepare.dataset_dir(data_dir)


def _records(path):
    from array_record.python import array_record_module
    from tensorflow_datasets.proto import tf_example_pb2

    reader = array_record_module.ArrayRecordReader(str(path))
    return reader.writer_options_string(), [
        tf_example_pb2.Example.FromString(r) for r in reader.read_all()
    ]


def test_records_equal_those_of_tfds_own_writer(built, tmp_path):
    """Same shard files, same records in the same order, same split metadata; protobuf
    leaves the order of a feature map open, so records are compared parsed."""
    config, data_dir, out = built
    reference = _tfds_reference_build(
        dataclasses.replace(config, duration_cache=data_dir / "duration_cache.json"),
        tmp_path / "reference",
    )
    files = sorted(p.name for p in out.glob("*.array_record-*"))
    assert files == sorted(p.name for p in reference.glob("*.array_record-*"))
    for name in files:
        (options, records), (reference_options, reference_records) = (
            _records(d / name) for d in (out, reference)
        )
        assert records == reference_records, name
        # TFDS's chunking (one record per chunk) with zstd level 1 instead of 3.
        assert options == reference_options.replace("zstd:3", "zstd:1"), (options, name)
    info, reference_info = (
        json.loads((d / "dataset_info.json").read_text()) for d in (out, reference)
    )
    assert info["splits"] == reference_info["splits"]
    assert (out / "features.json").read_text() == (reference / "features.json").read_text()


def test_index_matches_the_records(built):
    import tensorflow_datasets as tfds

    _, data_dir, out = built
    for split in ("train", "validation", "test_a", "test_b", "test_c"):
        source = tfds.data_source(prepare.DATASET_NAME, split=split, data_dir=str(data_dir))
        records = [source[i] for i in range(len(source))]
        index = json.loads((out / "index" / f"{split}.json").read_text())
        assert index["keys"] == [r["key"].decode() for r in records]
        assert index["num_samples"] == [len(r["audio"]) for r in records]
        assert index["speakers"] == [r["speaker"].decode() for r in records]


# ------------------------------------------------------------------- tf.train.Example bytes


def test_examples_parse_as_tfds_serializes_them():
    from tensorflow_datasets.core import example_serializer
    from tensorflow_datasets.proto import tf_example_pb2

    from papt_jax.data import tf_example

    features = prepare.PaptMspPodcast(data_dir="unused", file_format="array_record").info.features
    info = features.get_serialized_info()
    fields = tf_example.fields_from_features(info)
    reference = example_serializer.ExampleSerializer(info)
    rng = np.random.default_rng(0)
    # Every varint length of an int16 (1, 2, 3 and 10 bytes) at its edges, and random values.
    edges = [-32768, -16385, -16384, -129, -128, -1, 0, 1, 127, 128, 16383, 16384, 32767]
    for i in range(20):
        audio = np.r_[edges, rng.integers(-32768, 32768, int(rng.integers(1, 3000)))]
        example = {
            "key": f"clé_{i}.wav",
            "audio": audio.astype(np.int16),
            "speaker": str(i),
            "speaker_index": int(rng.integers(-1, 5)),  # -1: a 10-byte varint
            "arousal": float(rng.uniform(1, 7)),
            "valence": 4.0,
            "dominance": 1.0,
            "gender": "" if i % 4 == 0 else "Female",
            "num_samples": audio.size,
        }
        ours = tf_example.serialize(fields, example)
        theirs = reference.serialize_example(features.encode_example(example))
        assert len(ours) == len(theirs) == tf_example.serialized_size(fields, example)
        parsed = tf_example_pb2.Example.FromString
        assert parsed(ours) == parsed(theirs)


def test_unsupported_features_are_refused():
    import tensorflow_datasets as tfds

    from papt_jax.data import tf_example

    for feature in (
        tfds.features.Tensor(shape=(2, 3), dtype=np.float32),
        tfds.features.Tensor(shape=(), dtype=np.bool_),
    ):
        info = tfds.features.FeaturesDict({"x": feature}).get_serialized_info()
        with pytest.raises(ValueError, match="feature 'x'"):
            tf_example.fields_from_features(info)
