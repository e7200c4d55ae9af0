"""MFCC features: frame layout, a NumPy re-derivation, deltas, padding invariance."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from papt_jax import features
from papt_jax.features import labels_to_encoder_rate, mfcc_features, mfcc_num_frames


def _speechy(rng, samples):
    """Noise through a moving resonance plus a harmonic tone: a non-flat spectrum."""
    t = np.arange(samples) / 16_000
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.1 * np.sin(2 * np.pi * 1400 * t)
    noise = 0.05 * rng.standard_normal(samples)
    return (tone * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + noise).astype(np.float32)


def _reference_mfcc(wave):
    """Frame-by-frame NumPy/SciPy MFCCs written from Kaldi's description, (frames, 13)."""
    out = []
    n = np.arange(400)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
    edges = np.linspace(mel(20.0), mel(8000.0), 25)
    bins = mel(np.fft.rfftfreq(512, 1 / 16_000))
    fbank = np.zeros((257, 23))
    for m in range(23):
        lo, mid, hi = edges[m : m + 3]
        rising = (bins - lo) / (mid - lo)
        falling = (hi - bins) / (hi - mid)
        fbank[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    fbank[256] = 0.0  # Kaldi leaves the Nyquist bin out
    lifter = 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    for start in range(0, len(wave) - 399, 160):
        frame = wave[start : start + 400].astype(np.float64)
        frame = frame - frame.mean()
        emphasised = frame.copy()
        emphasised[1:] -= 0.97 * frame[:-1]
        emphasised[0] -= 0.97 * frame[0]
        power = np.abs(np.fft.rfft(emphasised * window, 512)) ** 2
        log_mel = np.log(np.maximum(power @ fbank, np.finfo(np.float32).eps))
        out.append(scipy.fft.dct(log_mel, type=2, norm="ortho")[:13] * lifter)
    return np.asarray(out)


def _reference_deltas(x):
    """torchaudio.functional.compute_deltas along axis 0, win_length=5, replicate edges."""
    padded = np.pad(x, ((2, 2), (0, 0)), mode="edge")
    t = len(x)
    return sum(k * (padded[2 + k : 2 + k + t] - padded[2 - k : 2 - k + t]) for k in (1, 2)) / 10


def test_frame_count_follows_snip_edges():
    assert mfcc_num_frames(399) == 0
    assert mfcc_num_frames(400) == 1
    assert mfcc_num_frames(559) == 1
    assert mfcc_num_frames(560) == 2
    assert mfcc_num_frames(16_000) == 98
    np.testing.assert_array_equal(
        np.asarray(mfcc_num_frames(jnp.array([0, 399, 400, 16_000]))), [0, 0, 1, 98]
    )


def test_matches_numpy_reference_and_deltas():
    wave = _speechy(np.random.default_rng(0), 8_000)
    feats, frame_mask = mfcc_features(wave[None], np.ones((1, wave.size), bool))
    feats = np.asarray(feats[0])
    assert feats.shape == (mfcc_num_frames(8_000), 39)
    assert np.asarray(frame_mask).all()
    ceps = _reference_mfcc(wave)
    np.testing.assert_allclose(feats[:, :13], ceps, rtol=1e-3, atol=2e-3)
    # Deltas of our own cepstra isolate the delta computation from float32 noise.
    deltas = _reference_deltas(feats[:, :13])
    np.testing.assert_allclose(feats[:, 13:26], deltas, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(feats[:, 26:], _reference_deltas(deltas), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_padding_invariance_and_padded_frames_zero():
    rng = np.random.default_rng(1)
    lengths = [16_000, 9_123, 400, 399, 0]
    samples = 16_000
    audio = rng.uniform(-1, 1, (len(lengths), samples)).astype(np.float32)  # junk padding
    mask = np.arange(samples)[None, :] < np.array(lengths)[:, None]
    for row, length in enumerate(lengths):
        audio[row, :length] = _speechy(rng, length)
    feats, frame_mask = mfcc_features(audio, mask)
    feats, frame_mask = np.asarray(feats), np.asarray(frame_mask)
    np.testing.assert_array_equal(frame_mask.sum(axis=1), [98, 55, 1, 0, 0])
    assert not feats[~frame_mask].any()
    # Rows 1 and 2 are padded in the batch; alone they have no padding at all.
    for row, length in ((1, lengths[1]), (2, lengths[2])):
        alone, alone_mask = mfcc_features(
            audio[row : row + 1, :length], mask[row : row + 1, :length]
        )
        valid = int(np.asarray(alone_mask).sum())
        np.testing.assert_allclose(feats[row, :valid], np.asarray(alone[0]), rtol=1e-5, atol=1e-4)


def test_silence_and_short_batches_are_finite():
    feats, frame_mask = mfcc_features(np.zeros((2, 1_000), np.float32), np.ones((2, 1_000), bool))
    assert np.isfinite(np.asarray(feats)).all() and np.asarray(frame_mask).all()
    feats, frame_mask = mfcc_features(np.zeros((2, 300), np.float32), np.ones((2, 300), bool))
    assert feats.shape == (2, 0, 39) and frame_mask.shape == (2, 0)


def test_shape_errors():
    with pytest.raises(ValueError, match="batch, samples"):
        mfcc_features(np.zeros((1_000,), np.float32), np.ones((1_000,), bool))
    with pytest.raises(ValueError, match="batch, samples"):
        mfcc_features(np.zeros((2, 1_000), np.float32), np.ones((2, 999), bool))


def test_mel_filterbank_covers_the_band():
    fbank = features._mel_filterbank()
    assert fbank.shape == (256, 23)
    peaks = fbank.argmax(axis=0)
    assert (np.diff(peaks) > 0).all()  # filters in increasing frequency
    assert fbank[: int(20 / 31.25)].sum() == 0  # nothing below 20 Hz
    assert fbank.max() <= 1.0 and fbank.max(axis=0).min() > 0.5


@pytest.mark.parametrize("samples", [400, 719, 720, 16_000, 16_317, 48_000])
def test_labels_to_encoder_rate_covers_every_encoder_frame(samples):
    labels = np.arange(mfcc_num_frames(samples), dtype=np.int32)
    encoder_frames = (samples - 400) // 320 + 1
    mapped = labels_to_encoder_rate(labels, encoder_frames)
    assert mapped.shape == (encoder_frames,)
    np.testing.assert_array_equal(mapped, 2 * np.arange(encoder_frames))


def test_labels_to_encoder_rate_pads_truncates_and_keeps_type():
    labels = np.array([[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]], np.int16)
    np.testing.assert_array_equal(labels_to_encoder_rate(labels, 2), [[5, 7], [1, 3]])
    padded = labels_to_encoder_rate(labels, 5)
    np.testing.assert_array_equal(padded, [[5, 7, 9, -1, -1], [1, 3, 5, -1, -1]])
    assert padded.dtype == np.int16
    on_device = labels_to_encoder_rate(jnp.asarray(labels), 4, pad_value=-100)
    assert isinstance(on_device, jnp.ndarray)
    np.testing.assert_array_equal(np.asarray(on_device), [[5, 7, 9, -100], [1, 3, 5, -100]])
    with pytest.raises(ValueError, match="num_frames"):
        labels_to_encoder_rate(labels, -1)
