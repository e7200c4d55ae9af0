"""39-dim MFCC + delta + delta-delta features at 100 Hz, for first-iteration pseudo-labels.

The recipe is the one fairseq's HuBERT iteration 1 uses (`examples/hubert/simple_kmeans/
dump_mfcc_feature.py`: `torchaudio.compliance.kaldi.mfcc(use_energy=False)` on float
waveforms in [-1, 1], then `torchaudio.functional.compute_deltas` twice), written in jnp
so it jits and batches. Per frame, with Kaldi's defaults:

* 25 ms window (400 samples), 10 ms hop (160 samples) at 16 kHz, `snip_edges=True`:
  a frame exists only where its whole window lies inside the utterance, so an
  utterance of `T` samples has `(T - 400) // 160 + 1` frames (0 below 400 samples).
* no dither; DC offset removed per frame; pre-emphasis 0.97 inside the frame (the first
  sample is scaled by 1 - 0.97, as Kaldi does); Povey window (Hann ** 0.85).
* zero-padded to a 512-point FFT; power spectrum; 23 triangular mel filters (Kaldi's
  mel scale 1127 ln(1 + f / 700), 20 Hz to Nyquist, triangles built on the mel axis);
  natural log floored at float32 epsilon.
* orthonormal DCT-II keeping 13 coefficients (c0 included, as `use_energy=False`),
  then Kaldi's cepstral lifter with Q = 22.
* deltas: `d[t] = sum_{k=1..2} k (x[t+k] - x[t-k]) / 10`, edges replicated (the
  utterance's own first/last frame, never padding); delta-deltas are deltas of deltas.

Not bit-exact with Kaldi: float32 throughout and an rfft instead of Kaldi's split-radix
FFT; k-means labels do not need more. Padded frames are zero and masked out.

Also here: `labels_to_encoder_rate`, the map from 100 Hz labels to HuBERT's 50 Hz frames.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.data.audio import SAMPLE_RATE

__all__ = [
    "FEATURE_DIM",
    "FRAME_LENGTH",
    "FRAME_SHIFT",
    "labels_to_encoder_rate",
    "mfcc_features",
    "mfcc_num_frames",
]

FRAME_LENGTH = SAMPLE_RATE * 25 // 1000  # Kaldi's 25 ms window (400 samples)
FRAME_SHIFT = SAMPLE_RATE * 10 // 1000  # 10 ms (160 samples)
FFT_SIZE = 512
NUM_MEL_BINS = 23
NUM_CEPS = 13
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 2
FEATURE_DIM = 3 * NUM_CEPS


def mfcc_num_frames(num_samples):
    """MFCC frames of an utterance of `num_samples` samples (int or int array).

    `(num_samples - 400) // 160 + 1`, and 0 when the utterance is shorter than a window.
    """
    if isinstance(num_samples, int):
        return max((num_samples - FRAME_LENGTH) // FRAME_SHIFT + 1, 0)
    num_samples = jnp.asarray(num_samples)
    return jnp.maximum((num_samples - FRAME_LENGTH) // FRAME_SHIFT + 1, 0)


def _mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(freq / 700.0)


@functools.cache
def _mel_filterbank() -> np.ndarray:
    """Kaldi's triangular mel filters, shape (FFT_SIZE // 2, NUM_MEL_BINS).

    The Nyquist bin gets no weight in Kaldi, so it is left out of the product.
    """
    mel_low, mel_high = _mel(np.float64(LOW_FREQ)), _mel(np.float64(SAMPLE_RATE / 2))
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    edges = mel_low + delta * np.arange(NUM_MEL_BINS + 2)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    bin_mel = _mel(np.arange(FFT_SIZE // 2) * SAMPLE_RATE / FFT_SIZE)[:, None]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


@functools.cache
def _dct_with_lifter() -> np.ndarray:
    """Orthonormal DCT-II rows 0..12 with the cepstral lifter folded in, (mel, ceps)."""
    n = np.arange(NUM_MEL_BINS)
    k = np.arange(NUM_CEPS)[:, None]
    dct = np.cos(np.pi / NUM_MEL_BINS * (n + 0.5) * k) * np.sqrt(2.0 / NUM_MEL_BINS)
    dct[0] /= np.sqrt(2.0)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * np.sin(np.pi * np.arange(NUM_CEPS) / CEPSTRAL_LIFTER)
    return (dct * lifter[:, None]).T.astype(np.float32)


@functools.cache
def _povey_window() -> np.ndarray:
    n = np.arange(FRAME_LENGTH)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))) ** 0.85


def _frame(audio: jax.Array, num_frames: int) -> jax.Array:
    """(batch, samples) -> (batch, num_frames, FRAME_LENGTH) overlapping windows."""
    index = jnp.arange(num_frames)[:, None] * FRAME_SHIFT + jnp.arange(FRAME_LENGTH)[None, :]
    return audio[:, index]


def _log_mel_cepstra(frames: jax.Array) -> jax.Array:
    """(..., FRAME_LENGTH) raw frames -> (..., NUM_CEPS) liftered MFCCs."""
    frames = frames - frames.mean(axis=-1, keepdims=True)
    frames = jnp.concatenate(
        [frames[..., :1] * (1.0 - PREEMPHASIS), frames[..., 1:] - PREEMPHASIS * frames[..., :-1]],
        axis=-1,
    )
    frames = frames * jnp.asarray(_povey_window(), frames.dtype)
    spectrum = jnp.fft.rfft(frames, n=FFT_SIZE, axis=-1)[..., : FFT_SIZE // 2]
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    # HIGHEST: accelerators would otherwise run these float32 products in TF32/bf16.
    mel = jnp.matmul(power, _mel_filterbank(), precision=jax.lax.Precision.HIGHEST)
    log_mel = jnp.log(jnp.maximum(mel, jnp.finfo(jnp.float32).eps))
    return jnp.matmul(log_mel, _dct_with_lifter(), precision=jax.lax.Precision.HIGHEST)


def _deltas(x: jax.Array, num_valid: jax.Array) -> jax.Array:
    """torchaudio-style deltas over time with edges replicated inside each utterance.

    Args:
      x: (batch, frames, dim).
      num_valid: (batch,) valid frames per utterance; clamping to the last valid frame
        keeps padding out of the result.

    Returns:
      (batch, frames, dim).
    """
    frames = x.shape[1]
    time = jnp.arange(frames)[None, :]
    last = jnp.maximum(num_valid - 1, 0)[:, None]
    denom = DELTA_WINDOW * (DELTA_WINDOW + 1) * (2 * DELTA_WINDOW + 1) / 3.0
    out = jnp.zeros_like(x)
    for k in range(1, DELTA_WINDOW + 1):
        ahead = jnp.clip(time + k, 0, last)
        behind = jnp.clip(time - k, 0, last)
        out = out + k * (
            jnp.take_along_axis(x, ahead[..., None], axis=1)
            - jnp.take_along_axis(x, behind[..., None], axis=1)
        )
    return out / denom


@jax.jit
def mfcc_features(audio: jax.Array, audio_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MFCC + delta + delta-delta of a batch of right-padded 16 kHz waveforms.

    A frame depends only on samples inside its own utterance's valid part, so the
    features of an utterance do not change with the padding it is batched with.

    Args:
      audio: (batch, samples) float32 waveforms in [-1, 1].
      audio_mask: (batch, samples) bool, True on valid samples (valid samples first).

    Returns:
      features: (batch, frames, 39) float32, [13 MFCC, 13 deltas, 13 delta-deltas],
        zero on padded frames, with frames = `mfcc_num_frames(samples)`.
      frame_mask: (batch, frames) bool, True on frames inside the utterance.
    """
    if audio.ndim != 2 or audio_mask.shape != audio.shape:
        raise ValueError(
            f"audio and audio_mask must both be (batch, samples), got {audio.shape} and "
            f"{audio_mask.shape}"
        )
    batch, samples = audio.shape
    num_frames = mfcc_num_frames(samples)
    lengths = audio_mask.astype(jnp.int32).sum(axis=1)
    num_valid = mfcc_num_frames(lengths)
    frame_mask = jnp.arange(num_frames)[None, :] < num_valid[:, None]
    if num_frames == 0:
        return jnp.zeros((batch, 0, FEATURE_DIM), jnp.float32), frame_mask

    audio = jnp.where(audio_mask, audio.astype(jnp.float32), 0.0)
    cepstra = _log_mel_cepstra(_frame(audio, num_frames))
    deltas = _deltas(cepstra, num_valid)
    delta_deltas = _deltas(deltas, num_valid)
    features = jnp.concatenate([cepstra, deltas, delta_deltas], axis=-1)
    return jnp.where(frame_mask[..., None], features, 0.0), frame_mask


def labels_to_encoder_rate(labels, num_frames: int, pad_value: int = -1):
    """Maps 100 Hz frame labels (MFCC k-means) to HuBERT's 50 Hz encoder frames.

    fairseq with `label_rate=100` reads target `i` of encoder frame `i` at index
    `2 * i` (`feat2tar_ratio = 100 * 320 / 16000 = 2`): every second label is kept. The
    result is truncated or padded with `pad_value` to the encoder's frame count,
    `num_frames = HubertConfig.num_frames(T)`, i.e. `(T - 400) // 320 + 1` for `T`
    samples. For MFCC labels of the same `T` samples nothing is ever padded, since
    `2 * ((T - 400) // 320) <= (T - 400) // 160`. (fairseq instead shortens the
    encoder output when labels run out; padding with an ignored value keeps shapes.)

    Args:
      labels: (..., label_frames) integer array at 100 Hz (NumPy or jnp).
      num_frames: Encoder frames F to produce.
      pad_value: Label for frames past the end of `labels` (ignored by the loss).

    Returns:
      (..., num_frames) labels at 50 Hz, same array type and dtype as `labels`.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    xp = jnp if isinstance(labels, jax.Array) else np
    labels = xp.asarray(labels)
    kept = labels[..., ::2][..., :num_frames]
    missing = num_frames - kept.shape[-1]
    if missing > 0:
        pad = [(0, 0)] * (kept.ndim - 1) + [(0, missing)]
        kept = xp.pad(kept, pad, constant_values=pad_value)
    return kept
