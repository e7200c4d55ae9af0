"""Files read window by window (`predict/stream.py`): the same samples and the same refusals as
reading them whole (`data.audio.read_audio`), in memory that does not grow with the file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile

from papt_jax.data.audio import AudioError, read_audio
from papt_jax.predict import stream
from papt_jax.predict.stream import open_recording
from papt_jax.predict.windows import Batching, window_batches


def _noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"),
    [
        (16_000, 1, "PCM_16"),
        (44_100, 2, "FLOAT"),
        (8_000, 1, "PCM_16"),
        (22_050, 1, "PCM_24"),
        (48_000, 2, "PCM_16"),
    ],
)
def test_slices_equal_the_whole_file_read_and_resampled(tmp_path, rate, channels, subtype):
    path = tmp_path / f"x.{'flac' if subtype == 'PCM_24' else 'wav'}"
    soundfile.write(path, _noise(rate * 5 + 123, channels), rate, subtype=subtype)
    whole = read_audio(path, resample=True, channels="mean", dtype="float32")
    recording = open_recording(path)
    assert len(recording) == len(whole)
    n = len(whole)
    for a, b in [(0, 400), (0, n), (1, 7_777), (12_345, 50_000), (n - 1_000, n), (n - 401, n - 1)]:
        np.testing.assert_array_equal(recording[a:b], whole[a:b], err_msg=f"[{a}:{b}]")
    assert recording[5:5].shape == (0,)
    with pytest.raises(TypeError, match="contiguous slices"):
        recording[::2]


def _problem_files(tmp_path):
    """(name -> path) of files read_audio refuses, each problem past the first block."""
    late = 3_000  # beyond BLOCK_FRAMES (patched below): the check must see every block
    files = {}
    for name, value in (("nan", np.nan), ("clipped", 1.5)):
        x = _noise(8_000, 1)
        x[late] = value
        files[name] = tmp_path / f"{name}.wav"
        soundfile.write(files[name], x, 16_000, subtype="FLOAT")
    files["silent"] = tmp_path / "silent.wav"
    soundfile.write(files["silent"], np.zeros(8_000, np.float32), 16_000, subtype="PCM_16")
    files["short"] = tmp_path / "short.wav"
    soundfile.write(files["short"], _noise(300, 1), 16_000, subtype="PCM_16")
    good = tmp_path / "good.wav"
    soundfile.write(good, _noise(8_000, 2), 44_100, subtype="PCM_16")
    files["truncated"] = tmp_path / "truncated.wav"
    files["truncated"].write_bytes(good.read_bytes()[:5_000])
    files["corrupt"] = tmp_path / "corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF0000WAVEnonsense")
    return files


def test_refusals_are_those_of_reading_the_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_FRAMES", 1_000)
    for name, path in _problem_files(tmp_path).items():
        with pytest.raises(AudioError) as whole:
            read_audio(path, resample=True, channels="mean", dtype="float32")
        with pytest.raises(AudioError) as streamed:
            open_recording(path)
        assert type(streamed.value) is type(whole.value), name
        assert streamed.value.detail == whole.value.detail, name


def test_a_long_file_is_predicted_in_memory_that_does_not_hold_it(tmp_path):
    """Ten minutes of audio (38 MB as float32) go through the prediction batches with a peak
    of traced allocations below a third of that: the file is read one window at a time."""
    path = tmp_path / "long.wav"
    seconds = 600
    with soundfile.SoundFile(path, "w", 16_000, 1, "PCM_16") as f:
        for minute in range(seconds // 60):
            f.write(_noise(60 * 16_000, 1, seed=minute))
    whole_bytes = seconds * 16_000 * 4
    batching = Batching(window_seconds=20.0, batch_seconds=40.0, num_buckets=2)

    tracemalloc.start()
    try:
        recording = open_recording(path)
        windows = batching.windows(0, len(recording))
        seen = 0.0
        for batch in window_batches([recording], windows, batching):
            seen += batch.seconds
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds <= seen < seconds + 1  # windows share 80 samples at each boundary
    assert peak < whole_bytes / 3, f"peak {peak / 1e6:.1f} MB"
