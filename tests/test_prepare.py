"""Audio checks (papt_jax.data.audio) and the TFDS builder (papt_jax.data.prepare)."""

import json

import numpy as np
import pytest
import soundfile
from fixtures.corpus_files import row, write_corpus, write_labels, write_wav

from papt_jax.data import audio, prepare
from papt_jax.data import msp_podcast as mp

# ----------------------------------------------------------------------------- audio


def test_read_audio_returns_the_int16_samples(tmp_path):
    samples = write_wav(tmp_path / "a.wav", 1000)
    out = audio.read_audio(tmp_path / "a.wav")
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, samples)
    as_float = audio.read_audio(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_allclose(as_float, samples / 32768.0, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda p: write_wav(p, 1600, rate=8000), audio.WrongSampleRate),
        (lambda p: write_wav(p, 1600, channels=2), audio.MultiChannelAudio),
        (lambda p: write_wav(p, 0), audio.EmptyAudio),
        (lambda p: write_wav(p, 399), audio.TooShortAudio),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage"), audio.CorruptAudio),
    ],
)
def test_each_audio_problem_raises_its_class(tmp_path, make, error):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(error) as info:
        audio.read_audio(path)
    assert isinstance(info.value, audio.AudioError)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_missing_file_is_corrupt_audio(tmp_path):
    with pytest.raises(audio.CorruptAudio):
        audio.read_audio(tmp_path / "absent.wav")


def test_channel_policies_and_resampling(tmp_path):
    stereo = write_wav(tmp_path / "s.wav", 800, channels=2)
    np.testing.assert_array_equal(
        audio.read_audio(tmp_path / "s.wav", channels="first"), stereo[:, 0]
    )
    mean = audio.read_audio(tmp_path / "s.wav", channels="mean")
    np.testing.assert_allclose(mean, stereo.mean(axis=1), atol=1.0)
    # 8 kHz -> 16 kHz doubles the length; a 300-sample file becomes 600 (>= 400) and passes.
    write_wav(tmp_path / "r.wav", 300, rate=8000)
    up = audio.read_audio(tmp_path / "r.wav", resample=True)
    assert up.dtype == np.int16 and up.shape == (600,)
    write_wav(tmp_path / "tiny.wav", 150, rate=8000)
    with pytest.raises(audio.TooShortAudio):
        audio.read_audio(tmp_path / "tiny.wav", resample=True)
    with pytest.raises(ValueError, match="channels"):
        audio.read_audio(tmp_path / "s.wav", channels="left")


def test_resampled_sine_keeps_its_frequency(tmp_path):
    t = np.arange(22050) / 22050
    soundfile.write(str(tmp_path / "sine.wav"), 0.5 * np.sin(2 * np.pi * 440 * t), 22050)
    out = audio.read_audio(tmp_path / "sine.wav", resample=True, dtype="float32")
    assert out.shape == (16000,)
    peak = np.argmax(np.abs(np.fft.rfft(out)))  # 1 s of audio: bin index = Hz
    assert peak == 440


# ----------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A corpus with two bad files and a new release, built once for the builder tests."""
    tmp = tmp_path_factory.mktemp("prep")
    rows = [
        row("tr_a.wav", 1, "Train", act=2.5, val=5.5, dom=3.5, gender="Male"),
        row("tr_b.wav", 2, "Train"),
        row("tr_bad.wav", 2, "Train"),
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
    }
    assert json.loads((out / "speakers.json").read_text()) == {"speakers": ["1", "2", "3", "4"]}
    index = json.loads((out / "index" / "test_a.json").read_text())
    assert index == {"keys": ["te_a.wav"], "num_samples": [16000]}
    assert (data_dir / "duration_cache.json").is_file()
    assert not (config.corpus_dir / "duration_cache.json").exists()


def test_records_match_the_corpus(built):
    import tensorflow_datasets as tfds

    config, data_dir, _ = built
    train = tfds.data_source(
        prepare.DATASET_NAME, split="train", data_dir=str(data_dir), download=False
    )
    records = {r["key"].decode(): r for r in (train[i] for i in range(len(train)))}
    assert sorted(records) == ["tr_a.wav", "tr_b.wav"]
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
    with pytest.raises(ValueError, match="other options"):
        prepare.prepare(mp.CorpusConfig(corpus_dir=config.corpus_dir, test_a_seconds=5.0), data_dir)


def test_cli_without_new_release_and_bad_audio_error(tmp_path, capsys):
    rows = [
        row("a.wav", 1, "Train"),
        row("b.wav", 2, "Development"),
        row("c.wav", 3, "Test1"),
        row("d.wav", 3, "Test1"),
    ]
    root = write_corpus(tmp_path / "corpus", rows)
    write_wav(root / "Audios" / "d.wav", 1600, rate=22050)
    prepare.main(
        ["--corpus", str(root), "--out", str(tmp_path / "data"), "--test_a_seconds", "0.05"]
    )
    printed = capsys.readouterr().out
    assert "test_c not built" in printed
    assert "skipped 1 audio file(s) {'wrong_sample_rate': 1}" in printed
    out = prepare.dataset_dir(tmp_path / "data")
    assert not list(out.glob("*test_c*")) and not list(out.glob("*test_b*"))
    with pytest.raises(mp.BadAudioError, match="wrong_sample_rate"):
        prepare.main(
            ["--corpus", str(root), "--out", str(tmp_path / "data2"), "--on_bad_audio", "error"]
        )
    prepare.main(
        [
            "--corpus",
            str(root),
            "--out",
            str(tmp_path / "data3"),
            "--resample",
            "--test_a_seconds",
            "0.05",
        ]
    )
    index = json.loads(
        (prepare.dataset_dir(tmp_path / "data3") / "index" / "test_b.json").read_text()
    )
    assert index["keys"] == ["d.wav"] and index["num_samples"] == [1161]  # 1600 * 16000/22050
