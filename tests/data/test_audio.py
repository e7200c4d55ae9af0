"""Reading and checking audio (papt_jax.data.audio): formats, scale, named problems."""

import numpy as np
import pytest
import soundfile
from fixtures.corpus_files import write_wav

from papt_jax.data import audio
from papt_jax.errors import UserError


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


# ----------------------------------------------------------------------------- formats


def _tone(num_samples: int = 4000, peak: float = 0.9) -> np.ndarray:
    """(num_samples,) float64 sine at 440 Hz, 16 kHz, with the given peak."""
    return peak * np.sin(2 * np.pi * 440 * np.arange(num_samples) / 16000)


# (format, subtype, tolerance of the float32 read against the written tone)
FORMATS = [
    ("WAV", "PCM_16", 1 / 32768),
    ("WAV", "PCM_24", 1 / 2**23),
    ("WAV", "PCM_32", 1e-7),
    ("WAV", "PCM_U8", 1 / 128),
    ("WAV", "FLOAT", 1e-7),
    ("WAV", "DOUBLE", 1e-7),
    ("WAV", "ULAW", 0.03),
    ("FLAC", "PCM_16", 1 / 32768),
    ("FLAC", "PCM_24", 1 / 2**23),
    ("OGG", "VORBIS", 0.05),
]


@pytest.mark.parametrize(("fmt", "subtype", "tol"), FORMATS)
def test_every_subtype_is_read_at_full_scale(tmp_path, fmt, subtype, tol):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    tone = _tone()
    path = tmp_path / f"x.{fmt.lower()}"
    soundfile.write(str(path), tone, 16000, format=fmt, subtype=subtype)
    as_float = audio.read_audio(path, dtype="float32")
    assert as_float.dtype == np.float32 and as_float.shape == tone.shape
    np.testing.assert_allclose(as_float, tone, rtol=0, atol=tol)
    stored = audio.read_audio(path)
    assert stored.dtype == np.int16
    # The int16 the dataset stores is the float read at 16-bit scale: peak ~0.9 * 32768,
    # never the near-silence of float samples cast to integers.
    np.testing.assert_array_equal(stored, np.round(as_float * 32768).astype(np.int16))
    assert abs(int(np.abs(stored).max()) - 0.9 * 32768) < max(tol, 1e-4) * 32768 + 1


def test_float_wav_within_one_half_step_of_full_scale_is_kept(tmp_path):
    tone = np.array([1.0, -1.0, 0.5, 0.0] * 200, dtype=np.float32)
    soundfile.write(str(tmp_path / "f.wav"), tone, 16000, subtype="FLOAT")
    stored = audio.read_audio(tmp_path / "f.wav")
    np.testing.assert_array_equal(stored[:4], [32767, -32768, 16384, 0])


# ----------------------------------------------------------------------------- named problems


def _pcm16_wav(path, samples):
    soundfile.write(str(path), np.asarray(samples, dtype=np.int16), 16000, subtype="PCM_16")


def _float_wav(path, samples):
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), 16000, subtype="FLOAT")


@pytest.mark.parametrize(
    ("make", "error", "detail"),
    [
        (lambda p: _float_wav(p, np.r_[_tone(1000), np.nan]), audio.NonFiniteAudio, "1 of 1001"),
        (lambda p: _float_wav(p, np.r_[_tone(1000), np.inf]), audio.NonFiniteAudio, "NaN or inf"),
        (lambda p: _float_wav(p, np.zeros(1000)), audio.SilentAudio, "zero"),
        (lambda p: _pcm16_wav(p, np.zeros(1000)), audio.SilentAudio, "zero"),
        (lambda p: _float_wav(p, np.full(1000, 1e-6)), audio.SilentAudio, "16-bit"),
        (lambda p: _float_wav(p, _tone(1000, peak=1.5)), audio.ClippedAudio, "peak 1.5"),
    ],
)
def test_sample_problems_raise_named_errors(tmp_path, make, error, detail):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(error, match=detail) as info:
        audio.read_audio(path)
    assert info.value.reason in str(info.value) and isinstance(info.value, UserError)
    audio.probe_audio(path)  # the header is fine: these are only found in the samples


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_truncated_wav_is_found_by_its_header(tmp_path, subtype):
    path = tmp_path / "cut.wav"
    soundfile.write(str(path), _tone(16000, peak=0.5), 16000, subtype=subtype)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # libsndfile alone would read the first half and say nothing.
    assert len(soundfile.read(str(path))[0]) < 16000
    with pytest.raises(audio.TruncatedAudio, match="header promises 16000 frames") as info:
        audio.probe_audio(path)
    assert info.value.reason == "truncated"
    with pytest.raises(audio.TruncatedAudio):
        audio.read_audio(path)


def test_streamed_wav_with_unknown_length_and_odd_chunks_is_not_truncated(tmp_path):
    path = tmp_path / "ok.wav"
    soundfile.write(str(path), _tone(1001, peak=0.5), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    # Insert an odd-sized LIST chunk (padded to even size) before the data chunk.
    data_at = data.index(b"data")
    extra = b"LIST" + (3).to_bytes(4, "little") + b"abc\x00"
    data[data_at:data_at] = extra
    path.write_bytes(bytes(data))
    assert audio.probe_audio(path).frames == 1001
    # A writer that did not know the length leaves 0xFFFFFFFF in the data chunk's size.
    data_at = data.index(b"data")
    data[data_at + 4 : data_at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    audio.probe_audio(path)


def test_truncated_flac_is_reported_not_accepted(tmp_path):
    path = tmp_path / "cut.flac"
    soundfile.write(str(path), _tone(16000, peak=0.5), 16000, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((audio.TruncatedAudio, audio.CorruptAudio)) as info:
        audio.read_audio(path)
    assert info.value.reason in ("truncated", "corrupt")


def test_audio_errors_are_user_errors_with_stable_reasons():
    reasons = {cls.reason for cls in audio.AudioError.__subclasses__()}
    assert reasons == {
        "wrong_sample_rate",
        "multi_channel",
        "empty",
        "too_short",
        "corrupt",
        "truncated",
        "non_finite",
        "clipping",
        "silent",
    }
    assert issubclass(audio.AudioError, UserError)


def test_frame_grid():
    assert audio.num_frames(399) == 0 and audio.num_frames(400) == 1
    assert audio.num_frames(16_000) == 49  # 50 Hz, less the last partial window
    np.testing.assert_array_equal(audio.num_frames(np.array([0, 720, 721])), [0, 2, 2])
    ceil = [audio.frame_grid_ceil(n) for n in (0, 400, 401, 720, 721)]
    assert ceil == [400, 400, 720, 720, 1040]
    floor = [audio.frame_grid_floor(n) for n in (0, 400, 719, 720, 1039)]
    assert floor == [400, 400, 400, 720, 720]
