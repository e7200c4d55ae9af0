"""Reader, validation and split rules of papt_jax.data.msp_podcast on hand-made corpora."""

import json
import logging
import os

import pytest
from fixtures.corpus_files import row, write_corpus, write_fake_durations, write_labels, write_wav
from fixtures.msp_releases import write_release_with_test3, write_two_releases

from papt_jax.data import msp_podcast as mp
from papt_jax.errors import UserError

# Hand-made corpora below hold no test rows; an unused group is configured as ().
NO_TEST = {"train": ("Train",), "validation": ("Development",), "test": ()}
TRAIN_ONLY = {"train": ("Train",), "validation": (), "test": ()}


def _keys(utterances):
    return [u.key for u in utterances]


@pytest.fixture
def corpus_dir(tmp_path):
    """Speakers 10, 2 (train), 7 (Development), 5, 30 (Test1), Unknown (train), 99 (Test2)."""
    rows = [
        row("t1.wav", 10, "Train", act=2.0, val=6.5, dom=3.0),
        row("t2.wav", 2, "Train"),
        row("t3.wav", "Unknown", "Train"),
        row("v1.wav", 7, "Development", gender="Male"),
        # Test speaker 5, deliberately out of file-name order in the CSV.
        row("s5_d.wav", 5, "Test1"),
        row("s5_b.wav", 5, "Test1"),
        row("s5_a.wav", 5, "Test1"),
        row("s5_c.wav", 5, "Test1"),
        row("s30_a.wav", 30, "Test1"),
        row("s30_b.wav", 30, "Test1"),
        row("x1.wav", 99, "Test2"),
    ]
    root = write_corpus(tmp_path / "corpus", rows)
    durations = {
        "s5_a.wav": 90,
        "s5_b.wav": 90,
        "s5_c.wav": 90,
        "s5_d.wav": 30,
        "s30_a.wav": 100,
        "s30_b.wav": 50,
    }
    write_fake_durations(tmp_path / "cache.json", root / "Audios", durations)
    return root


def _config(root, tmp_path, **kwargs):
    return mp.CorpusConfig(corpus_dir=root, duration_cache=tmp_path / "cache.json", **kwargs)


def test_test_a_takes_utterances_in_file_name_order_until_200_seconds(corpus_dir, tmp_path):
    corpus = mp.load_corpus(_config(corpus_dir, tmp_path))
    # Speaker 5: a (90) + b (90) = 180 < 200, so c (90) is added too (270 >= 200); d is left.
    # Speaker 30 has only 150 s: everything is in test_a.
    assert _keys(corpus.splits["test_a"]) == [
        "s5_a.wav",
        "s5_b.wav",
        "s5_c.wav",
        "s30_a.wav",
        "s30_b.wav",
    ]
    assert _keys(corpus.splits["test_b"]) == ["s5_d.wav"]
    a, b = set(_keys(corpus.splits["test_a"])), set(_keys(corpus.splits["test_b"]))
    assert not a & b
    assert a | b == {"s5_a.wav", "s5_b.wav", "s5_c.wav", "s5_d.wav", "s30_a.wav", "s30_b.wav"}
    assert [u.duration for u in corpus.splits["test_b"]] == [30.0]


def test_test_a_seconds_is_configurable(corpus_dir, tmp_path):
    corpus = mp.load_corpus(_config(corpus_dir, tmp_path, test_a_seconds=90.0))
    assert _keys(corpus.splits["test_a"]) == ["s5_a.wav", "s30_a.wav"]
    assert _keys(corpus.splits["test_b"]) == ["s5_b.wav", "s5_c.wav", "s5_d.wav", "s30_b.wav"]


def test_splits_speakers_and_labels(corpus_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="papt_jax.data.msp_podcast"):
        corpus = mp.load_corpus(_config(corpus_dir, tmp_path))
    assert _keys(corpus.splits["train"]) == ["t1.wav", "t2.wav"]  # Unknown dropped
    assert _keys(corpus.splits["validation"]) == ["v1.wav"]
    assert "test_c" not in corpus.splits
    assert "dropped 1 utterance(s) of speaker 'Unknown'" in caplog.text
    assert "Test2" in caplog.text  # unused split names are reported, not loaded
    # Numeric ids sort numerically; Test2-only speaker 99 is not used.
    assert corpus.speakers == ("2", "5", "7", "10", "30")
    t1 = corpus.splits["train"][0]
    assert (t1.speaker_id, t1.speaker_index) == ("10", 3)
    assert (t1.arousal, t1.valence, t1.dominance, t1.gender) == (2.0, 6.5, 3.0, "Female")
    assert t1.path == (corpus_dir / "Audios" / "t1.wav").resolve()
    assert t1.duration == pytest.approx(0.1)  # 1600 samples, probed from the real file
    assert all(
        u.speaker_index == corpus.speakers.index(u.speaker_id)
        for split in corpus.splits.values()
        for u in split
    )


def test_speakers_json_round_trip(corpus_dir, tmp_path):
    corpus = mp.load_corpus(_config(corpus_dir, tmp_path))
    mp.write_speakers(corpus, tmp_path / "speakers.json")
    assert mp.read_speakers(tmp_path / "speakers.json") == corpus.speakers
    assert json.loads((tmp_path / "speakers.json").read_text())["speakers"][0] == "2"


def test_old_labels_spelling_and_split_name_mapping(tmp_path):
    rows = [row("a.wav", 1, "Train"), row("b.wav", 2, "Validation"), row("c.wav", 3, "Test1")]
    root = write_corpus(tmp_path / "c", rows, labels_name="labels_concensus.csv")
    corpus = mp.load_corpus(mp.CorpusConfig(corpus_dir=root, test_a_seconds=1.0))
    assert _keys(corpus.splits["validation"]) == ["b.wav"]
    assert _keys(corpus.splits["test_a"]) == ["c.wav"]
    custom = mp.CorpusConfig(
        corpus_dir=root,
        splits={"train": ("Train", "Validation"), "validation": (), "test": ("Test1",)},
    )
    assert _keys(mp.load_corpus(custom).splits["train"]) == ["a.wav", "b.wav"]


def test_test_c_excludes_old_test_speakers(corpus_dir, tmp_path, caplog):
    new_rows = [
        row("s5_a.wav", 5, "Test1"),  # speaker 5 was in the old test set: excluded
        row("n1.wav", 40, "Test1"),  # new speaker
        row("n2.wav", 40, "Test1"),
        row("t2.wav", 2, "Test1"),  # old *train* speaker: kept, with a warning
        row("n3.wav", 41, "Train"),  # not a test split of the new release
        row("n4.wav", "Unknown", "Test1"),
    ]
    for i, name in enumerate(("n1.wav", "n2.wav", "n3.wav", "n4.wav")):
        write_wav(corpus_dir / "Audios" / name, seed=50 + i)
    write_labels(corpus_dir / "Labels_new" / "labels_consensus.csv", new_rows)
    config = _config(corpus_dir, tmp_path, new_labels_file="Labels_new/labels_consensus.csv")
    with caplog.at_level(logging.WARNING, logger="papt_jax.data.msp_podcast"):
        corpus = mp.load_corpus(config)
    assert _keys(corpus.splits["test_c"]) == ["t2.wav", "n1.wav", "n2.wav"]
    assert all(u.speaker_index == -1 for u in corpus.splits["test_c"])
    assert "40" not in corpus.speakers and "41" not in corpus.speakers
    assert "not unseen" in caplog.text and "'2'" in caplog.text
    old_test = {u.speaker_id for s in ("test_a", "test_b") for u in corpus.splits[s]}
    assert not old_test & {u.speaker_id for u in corpus.splits["test_c"]}


def test_bad_rows_raise_one_error_listing_each(tmp_path):
    rows = [
        row("good.wav", 1, "Train"),
        row("nan.wav", 1, "Train", act="nan"),
        row("high.wav", 1, "Train", val=7.5),
        row("low.wav", 1, "Train", dom=0.0),
        row("word.wav", 1, "Train", act="high"),
        row("nospk.wav", "", "Train"),
        row("dup.wav", 1, "Train"),
        row("dup.wav", 1, "Development"),
    ]
    root = write_corpus(tmp_path / "c", rows)
    write_labels(root / "Labels" / "labels_consensus.csv", [*rows, row("gone.wav", 1, "Train")])
    with pytest.raises(mp.BadRowsError) as info:
        mp.load_corpus(mp.CorpusConfig(corpus_dir=root, splits=NO_TEST))
    reasons = {(bad.line, bad.key, bad.reason) for bad in info.value.bad_rows}
    assert reasons == {
        (3, "nan.wav", "bad_label"),
        (4, "high.wav", "bad_label"),
        (5, "low.wav", "bad_label"),
        (6, "word.wav", "bad_label"),
        (7, "nospk.wav", "missing_value"),
        (8, "dup.wav", "duplicate_file"),
        (9, "dup.wav", "duplicate_file"),
        (10, "gone.wav", "missing_audio"),
    }
    message = str(info.value)
    assert "8 bad row(s)" in message and "line 10 (gone.wav): missing_audio" in message


def test_bad_rows_skip_logs_counts_per_reason(tmp_path, caplog):
    rows = [
        row("good.wav", 1, "Train"),
        row("nan.wav", 1, "Train", act="nan"),
        row("dup.wav", 1, "Train"),
        row("dup.wav", 1, "Train"),
    ]
    root = write_corpus(tmp_path / "c", rows)
    with caplog.at_level(logging.WARNING, logger="papt_jax.data.msp_podcast"):
        corpus = mp.load_corpus(
            mp.CorpusConfig(corpus_dir=root, splits=TRAIN_ONLY, on_bad_rows="skip")
        )
    assert _keys(corpus.splits["train"]) == ["good.wav"]
    assert "skipped 3 bad row(s): {'bad_label': 1, 'duplicate_file': 2}" in caplog.text


def test_error_lists_first_rows_and_counts_the_rest(tmp_path):
    rows = [row(f"r{i:02d}.wav", 1, "Train", act=9) for i in range(25)]
    root = write_corpus(tmp_path / "c", rows)
    with pytest.raises(mp.BadRowsError, match=r"25 bad row\(s\)") as info:
        mp.load_corpus(mp.CorpusConfig(corpus_dir=root, splits=TRAIN_ONLY))
    assert "r19.wav" in str(info.value) and "r20.wav" not in str(info.value)
    assert "... and 5 more" in str(info.value)


def test_missing_column_and_missing_labels_file(tmp_path):
    root = tmp_path / "c"
    write_wav(root / "Audios" / "a.wav")
    header = [h for h in ("FileName", "EmoAct", "EmoVal", "SpkrID", "Gender", "Split_Set")]
    write_labels(root / "Labels" / "labels_consensus.csv", [row("a.wav", 1, "Train")], header)
    with pytest.raises(mp.CorpusError, match="EmoDom"):
        mp.load_corpus(mp.CorpusConfig(corpus_dir=root))
    (root / "Labels" / "labels_consensus.csv").unlink()
    with pytest.raises(mp.CorpusError, match="no labels file"):
        mp.load_corpus(mp.CorpusConfig(corpus_dir=root))


def test_bad_audio_headers_are_skipped_with_reasons_or_raise(tmp_path):
    rows = [
        row(n, 1, "Train")
        for n in ("ok.wav", "rate.wav", "stereo.wav", "short.wav", "empty.wav", "junk.wav")
    ]
    root = write_corpus(tmp_path / "c", rows)
    audios = root / "Audios"
    write_wav(audios / "rate.wav", 1600, rate=8000)
    write_wav(audios / "stereo.wav", 1600, channels=2)
    write_wav(audios / "short.wav", 399)
    write_wav(audios / "empty.wav", 0)
    (audios / "junk.wav").write_bytes(b"not a wav file at all")
    corpus = mp.load_corpus(mp.CorpusConfig(corpus_dir=root, splits=TRAIN_ONLY))
    assert _keys(corpus.splits["train"]) == ["ok.wav"]
    assert {(s.key, s.reason) for s in corpus.skipped_audio} == {
        ("rate.wav", "wrong_sample_rate"),
        ("stereo.wav", "multi_channel"),
        ("short.wav", "too_short"),
        ("empty.wav", "empty"),
        ("junk.wav", "corrupt"),
    }
    relaxed = mp.load_corpus(
        mp.CorpusConfig(corpus_dir=root, splits=TRAIN_ONLY, resample=True, channels="mean")
    )
    assert _keys(relaxed.splits["train"]) == ["ok.wav", "rate.wav", "stereo.wav"]
    assert relaxed.splits["train"][1].duration == pytest.approx(0.2)
    with pytest.raises(mp.BadAudioError, match="5 bad audio file"):
        mp.load_corpus(mp.CorpusConfig(corpus_dir=root, splits=TRAIN_ONLY, on_bad_audio="error"))


def test_duration_cache_is_used_and_refreshed_on_change(corpus_dir, tmp_path):
    config = _config(corpus_dir, tmp_path)
    assert mp.load_corpus(config).splits["test_b"][0].duration == 30.0  # from the fake cache
    path = corpus_dir / "Audios" / "s5_d.wav"
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))  # touched -> probed again
    corpus = mp.load_corpus(config)
    # s5_d is now 0.1 s: test_b is still s5_d (a+b+c >= 200) but with its real duration.
    assert corpus.splits["test_b"][0].duration == pytest.approx(0.1)
    cached = json.loads((tmp_path / "cache.json").read_text())["files"]
    audios = (corpus_dir / "Audios").resolve()
    assert cached[str(audios / "s5_d.wav")]["frames"] == 1600
    assert cached[str(audios / "s5_a.wav")]["frames"] == 90 * 16000
    assert not list(corpus_dir.rglob("*.json"))  # nothing written inside the corpus


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="on_bad_rows"):
        mp.CorpusConfig(corpus_dir=tmp_path, on_bad_rows="ignore")
    with pytest.raises(ValueError, match="columns lacks"):
        mp.CorpusConfig(corpus_dir=tmp_path, columns={"file": "FileName"})
    with pytest.raises(ValueError, match="test_a_seconds"):
        mp.CorpusConfig(corpus_dir=tmp_path, test_a_seconds=0)


# ----------------------------------------------------------------------------- releases


@pytest.fixture
def releases(tmp_path):
    return write_two_releases(tmp_path)


def test_v16_and_v110_side_by_side_read_test_c_audio_from_the_newer_folder(releases, caplog):
    config = mp.CorpusConfig(
        corpus_dir=releases.old, new_corpus_dir=releases.new, test_a_seconds=0.1
    )
    with caplog.at_level(logging.INFO, logger="papt_jax.data.msp_podcast"):
        corpus = mp.load_corpus(config)
    # v1.6: misspelt labels file, dev split "Validation", Unknown dropped, Test2 unused.
    assert _keys(corpus.splits["train"]) == [
        "MSP-PODCAST_0001_0001.wav",
        "MSP-PODCAST_0001_0002.wav",
        "MSP-PODCAST_0002_0001.wav",
    ]
    assert _keys(corpus.splits["validation"]) == ["MSP-PODCAST_0003_0001.wav"]
    assert _keys(corpus.splits["test_a"]) == [
        "MSP-PODCAST_0004_0001.wav",
        "MSP-PODCAST_0005_0001.wav",
    ]
    assert _keys(corpus.splits["test_b"]) == ["MSP-PODCAST_0004_0002.wav"]
    assert corpus.speakers == ("1", "2", "3", "4", "5")
    # test_c: v1.10 Test1 minus v1.6 test speaker 4, audio from v1.10's own Audios/.
    test_c = corpus.splits["test_c"]
    assert tuple(_keys(test_c)) == releases.test_c_keys
    assert all(u.path.parent == (releases.new / "Audios").resolve() for u in test_c)
    assert all(not (releases.old / "Audios" / k).exists() for k in releases.test_c_keys)
    assert [u.speaker_index for u in test_c] == [-1, -1, -1]
    assert [u.arousal for u in test_c] == [3.0, 2.0, 4.0]
    # The v1.10 Train rows (empty labels, missing audio) were not validated, only counted.
    assert "not validated" in caplog.text and "'Train': 6" in caplog.text
    # Shared file names keep the main corpus's audio for the older splits.
    assert corpus.splits["train"][0].path.parent == (releases.old / "Audios").resolve()


def test_new_corpus_dir_labels_override_and_split_names(releases):
    # v1.10 labels copied under another name inside the new release: relative to it.
    custom = releases.new / "Labels" / "my_labels.csv"
    custom.write_text((releases.new / "Labels" / "labels_consensus.csv").read_text())
    config = mp.CorpusConfig(
        corpus_dir=releases.old,
        new_corpus_dir=releases.new,
        new_labels_file="Labels/my_labels.csv",
        test_c_splits=("Test1", "Test2"),
        test_a_seconds=0.1,
    )
    corpus = mp.load_corpus(config)
    # Speaker 6 was in v1.6's Test2, which is not the configured older test set (Test1).
    assert _keys(corpus.splits["test_c"]) == [
        "MSP-PODCAST_0006_0001.wav",
        *releases.test_c_keys,
        "MSP-PODCAST_0010_0001.wav",
    ]


def test_new_labels_file_inside_another_release_is_refused_with_a_hint(releases):
    # The old README command: labels of v1.10, audio looked up in v1.6.
    config = mp.CorpusConfig(
        corpus_dir=releases.old,
        new_labels_file=releases.new / "Labels" / "labels_consensus.csv",
    )
    with pytest.raises(mp.CorpusError, match="another release folder") as info:
        mp.load_corpus(config)
    assert info.value.hint.startswith(f"set data.new_corpus_dir={releases.new}")


def test_split_name_matching_no_row_lists_the_names_present(releases):
    config = mp.CorpusConfig(
        corpus_dir=releases.new, splits={**mp.DEFAULT_SPLITS, "test": ("Test",)}
    )
    with pytest.raises(mp.CorpusError) as info:
        mp.load_corpus(config)
    labels = releases.new / "Labels" / "labels_consensus.csv"
    assert info.value.message == (
        f"data.test_splits='Test' matches no row of {labels}; "
        "Split_Set values present: Development, Test1, Test2, Train"
    )
    config = mp.CorpusConfig(
        corpus_dir=releases.old, new_corpus_dir=releases.new, test_c_splits=("Test3",)
    )
    with pytest.raises(mp.CorpusError, match="data.new_test_splits='Test3' matches no row"):
        mp.load_corpus(config)
    # Only one of a group's names has to occur ("Development" or "Validation").
    assert mp.load_corpus(mp.CorpusConfig(corpus_dir=releases.old, test_a_seconds=0.1))


def test_test3_rows_with_withheld_labels_are_ignored_unless_used(tmp_path):
    release = write_release_with_test3(tmp_path)
    corpus = mp.load_corpus(mp.CorpusConfig(corpus_dir=release, test_a_seconds=0.1))
    assert _keys(corpus.splits["test_a"]) == ["c.wav"]
    used = mp.CorpusConfig(
        corpus_dir=release, splits={**mp.DEFAULT_SPLITS, "test": ("Test1", "Test3")}
    )
    with pytest.raises(mp.BadRowsError) as info:
        mp.load_corpus(used)
    assert {(r.key, r.reason) for r in info.value.bad_rows} == {
        ("e.wav", "missing_value"),
        ("f.wav", "missing_value"),
    }
    assert "labels withheld" in str(info.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent", "does not exist"),
        (lambda p: p / "empty", "is empty"),
        (lambda p: (p / "file.txt", p.joinpath("file.txt").write_text("x"))[0], "not a folder"),
        (lambda p: (p / "labels_only", write_labels(p / "labels_only" / "x.csv", []))[0], "Audios"),
    ],
)
def test_unusable_corpus_folders_are_user_errors(tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        mp.load_corpus(mp.CorpusConfig(corpus_dir=path))
    assert "data.corpus_dir" in info.value.message and str(path) in info.value.message
    good = write_release_with_test3(tmp_path / "good")
    with pytest.raises(UserError, match="data.new_corpus_dir"):
        mp.load_corpus(mp.CorpusConfig(corpus_dir=good, new_corpus_dir=path))


def test_reader_errors_are_user_errors_and_still_value_errors():
    for cls in (mp.CorpusError, mp.BadRowsError, mp.BadAudioError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)


def test_rows_without_split_name_are_reported_not_validated(tmp_path, caplog):
    rows = [row("a.wav", 1, "Train"), row("b.wav", 2, "", act="")]
    root = write_corpus(tmp_path / "c", rows)
    with caplog.at_level(logging.INFO, logger="papt_jax.data.msp_podcast"):
        corpus = mp.load_corpus(mp.CorpusConfig(corpus_dir=root, splits=TRAIN_ONLY))
    assert _keys(corpus.splits["train"]) == ["a.wav"]
    assert "1 row(s) have no Split_Set value" in caplog.text


def test_default_columns_name_header_columns():
    assert set(mp.DEFAULT_COLUMNS.values()) <= set(mp.CSV_COLUMNS)
    assert set(mp.RATED_DIMENSIONS) <= set(mp.DEFAULT_COLUMNS)
