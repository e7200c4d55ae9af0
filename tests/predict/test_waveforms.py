"""Array and file input for prediction: checks, mix-down, resampling, discovery (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from papt_jax.data.audio import (
    ClippedAudio,
    EmptyAudio,
    NonFiniteAudio,
    SilentAudio,
    TooShortAudio,
    read_audio,
)
from papt_jax.errors import UserError
from papt_jax.predict import files
from papt_jax.predict.waveforms import batch_to_list, to_model_input


def _tone(n: int, rate: int = 16_000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype(np.float32)


def test_arrays_are_checked_like_files():
    with pytest.raises(EmptyAudio, match="w: no samples"):
        to_model_input(np.zeros(0, np.float32), 16_000, "w")
    x = _tone(8000)
    x[3] = np.inf
    with pytest.raises(NonFiniteAudio, match="1 of 8000"):
        to_model_input(x, 16_000, "w")
    with pytest.raises(TooShortAudio, match="399 samples"):
        to_model_input(_tone(399), 16_000, "w")
    with pytest.raises(ClippedAudio, match="peak 1.2"):
        to_model_input(4 * _tone(8000), 16_000, "w")
    with pytest.raises(SilentAudio):
        to_model_input(np.zeros(8000, np.float32), 16_000, "w")
    with pytest.raises(UserError, match="sample_rate must be a positive integer"):
        to_model_input(_tone(8000), 0, "w")
    with pytest.raises(UserError, match=r"\(samples, channels\)"):
        to_model_input(np.zeros((2, 2, 2)), 16_000, "w")


def test_arrays_and_files_resample_and_mix_down_alike(tmp_path):
    """A 44.1 kHz stereo array gives what the data path gives for the same file."""
    stereo = np.stack([_tone(44_100, 44_100), 0.5 * _tone(44_100, 44_100)], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 44_100, subtype="FLOAT")
    from_array = to_model_input(stereo, 44_100, "w")
    from_file = files.read_for_model(path)
    assert from_array.dtype == np.float32 and from_array.shape == (16_000,)
    np.testing.assert_array_equal(from_array, from_file)
    expected = read_audio(path, resample=True, channels="mean", dtype="float32")
    np.testing.assert_array_equal(from_file, expected)


def test_batches_of_waveforms():
    assert len(batch_to_list(np.zeros((3, 800), np.float32))) == 3
    assert len(batch_to_list(np.zeros(800, np.float32))) == 1
    assert len(batch_to_list([np.zeros(800), np.zeros(900)])) == 2
    with pytest.raises(UserError, match="an array or a list"):
        batch_to_list("a.wav")


def test_find_audio_recurses_keeps_order_and_reports_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/2.wav", "a/b/1.FLAC", "a/notes.txt", "z.ogg"):
        (tmp_path / name).write_bytes(b"x")
    named = tmp_path / "named.dat"
    named.write_bytes(b"x")
    found = files.find_audio([str(named), str(tmp_path / "a"), str(tmp_path / "a" / "2.wav")])
    assert found.files == (named, tmp_path / "a/2.wav", tmp_path / "a/b/1.FLAC")
    assert found.ignored == (tmp_path / "a/notes.txt",)
    with pytest.raises(files.NoAudioError, match="does not exist"):
        files.find_audio([str(tmp_path / "missing")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(files.NoAudioError, match="--enroll: no audio file"):
        files.find_audio([str(empty)], "--enroll")
    assert files.split_paths(" a.wav, ,dir/ ") == ["a.wav", "dir/"]


def test_read_chunks_names_broken_files_and_reads_the_rest(tmp_path):
    good = tmp_path / "good.wav"
    soundfile.write(good, _tone(16_000), 16_000, subtype="PCM_16")
    short = tmp_path / "short.wav"
    soundfile.write(short, _tone(100), 16_000, subtype="PCM_16")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(good.read_bytes()[:100])
    nan = tmp_path / "nan.wav"
    bad = _tone(8000)
    bad[5] = np.nan
    soundfile.write(nan, bad, 16_000, subtype="FLOAT")
    chunks = list(files.read_chunks([broken, good, short, nan, good]))
    paths = [p for c in chunks for p in c[0]]
    problems = {p.file.name: p.reason for c in chunks for p in c[2]}
    assert paths == [good, good]
    expected = {"broken.wav": "truncated", "short.wav": "too_short", "nan.wav": "non_finite"}
    assert problems == expected
