"""HuBERT / wav2vec 2.0 span masking (fairseq `compute_mask_indices`, 'static' spans).

Semantics follow fairseq's `fairseq/data/data_utils.py::compute_mask_indices` with
`mask_type='static'`, `no_overlap=False`, `require_same_masks=True`, `mask_dropout=0`,
per-row span counts (`num_mask_ver=2`) and start selection `idc_select_ver=1`:

1. Each row's valid length `sz` is the number of True entries of its frame mask
   (valid frames must come first: right padding).
2. `num_mask = max(min_masks, floor(mask_prob * sz / mask_length + u))`, `u ~ U[0, 1)`:
   random rounding so the expected span count is `mask_prob * sz / mask_length`.
3. `num_mask` *distinct* span starts are drawn uniformly from `[0, sz - mask_length)`;
   when that range holds no more than `num_mask` positions (short rows) it is
   widened to `[0, num_mask]`. Each start masks `mask_length` frames; spans may
   overlap and anything past `sz` is dropped. Like fairseq, the last valid frame
   can only be masked through the widened range of short rows.
4. Every row is trimmed to the batch's smallest masked count by keeping a uniformly
   random subset of its masked frames (fairseq's `require_same_masks=True`).

Departures from fairseq, all for rows fairseq cannot handle:

* fairseq raises when a row ends up fully masked (e.g. 11 valid frames and two
  spans); here the trim target is also capped at `sz - 1` for every row, so at
  least one valid frame stays visible. This only changes batches holding a row
  shorter than about `mask_length + num_mask`.
* Rows with no valid frame (batch filler) mask nothing and are left out of the
  batch minimum instead of forcing it to zero.

Because spans overlap, the masked fraction is below `mask_prob` (about 0.57 for
`mask_prob=0.8` and 0.49 for 0.65 on a lone long row) and the batch trim lowers it further.

Two implementations with the same distribution: `compute_mask_indices` (NumPy, host
side, the reference) and `compute_mask_indices_jax` (fixed shapes, jittable; what the
training step calls). They consume randomness differently, so they agree in
distribution, not sample by sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["compute_mask_indices", "compute_mask_indices_jax"]


def _check_args(mask_prob: float, mask_length: int, min_masks: int) -> None:
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    if min_masks < 0:
        raise ValueError(f"min_masks must be >= 0, got {min_masks}")


def _check_frame_mask_np(frame_mask: np.ndarray) -> np.ndarray:
    frame_mask = np.asarray(frame_mask)
    if frame_mask.ndim != 2 or frame_mask.dtype != np.bool_:
        raise ValueError(
            f"frame_mask must be a bool array of shape (batch, frames), got "
            f"{frame_mask.dtype} {frame_mask.shape}"
        )
    lengths = frame_mask.sum(axis=1)
    prefix = np.arange(frame_mask.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(prefix, frame_mask):
        raise ValueError("frame_mask must be right-padded: valid frames first, then padding")
    return lengths


def _row_span_mask(
    rng: np.random.Generator, sz: int, mask_prob: float, mask_length: int, min_masks: int
) -> np.ndarray:
    """Masked frame indices of one row before the batch trim, shape (count,)."""
    num_mask = max(min_masks, int(mask_prob * sz / float(mask_length) + rng.random()))
    if num_mask == 0:
        return np.zeros((0,), np.int64)
    num_starts = sz - mask_length
    if num_starts <= num_mask:
        num_starts = num_mask + 1
    starts = rng.choice(num_starts, num_mask, replace=False)
    frames = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)
    return np.unique(frames[frames < sz])


def compute_mask_indices(
    rng: np.random.Generator,
    frame_mask: np.ndarray,
    mask_prob: float,
    mask_length: int = 10,
    min_masks: int = 2,
) -> np.ndarray:
    """Samples fairseq-style span masks on the host (reference implementation).

    Args:
      rng: NumPy generator; the same seed gives the same masks.
      frame_mask: (batch, frames) bool, True on valid encoder frames, right-padded.
      mask_prob: Expected fraction of valid frames chosen as span starts times
        `mask_length` (fairseq HuBERT base and large: 0.8).
      mask_length: Frames per span.
      min_masks: Smallest number of spans per non-empty row.

    Returns:
      (batch, frames) bool, True on masked frames. Padding is never masked, every row
      with valid frames has the same number of masked frames, and no row is fully
      masked.

    Raises:
      ValueError: on a bad argument or a frame mask that is not right-padded.
    """
    _check_args(mask_prob, mask_length, min_masks)
    lengths = _check_frame_mask_np(frame_mask)
    batch, frames = frame_mask.shape
    rows = [
        _row_span_mask(rng, int(sz), mask_prob, mask_length, min_masks) if sz > 0 else None
        for sz in lengths
    ]
    caps = [min(len(idc), int(sz) - 1) for idc, sz in zip(rows, lengths, strict=True) if sz > 0]
    target = min(caps) if caps else 0
    mask = np.zeros((batch, frames), dtype=bool)
    for i, idc in enumerate(rows):
        if idc is None:
            continue
        if len(idc) > target:
            idc = rng.choice(idc, target, replace=False)
        mask[i, idc] = True
    return mask


def _max_num_spans(num_frames: int, mask_length: int, min_masks: int) -> int:
    """Static upper bound on a row's span count for any mask_prob <= 1."""
    return max(min_masks, num_frames // mask_length + 1, 1)


def _random_subset(key: jax.Array, candidates: jax.Array, count: jax.Array) -> jax.Array:
    """Picks `count[b]` entries of each row of `candidates` uniformly without replacement.

    Every candidate gets a distinct random uint32 score (top bit set, random middle
    bits, its index in the low bits so no two scores tie); non-candidates score 0.
    The picked entries are those at or above the row's `count`-th largest score: one
    sort per row instead of an argsort pair. Index bits only break ties between equal
    random bits (probability about 2**-(31 - log2(n)) per pair), a negligible bias.

    Args:
      key: PRNG key.
      candidates: (batch, n) bool, the entries that may be picked.
      count: (batch,) int, how many to pick; at most the row's number of candidates.

    Returns:
      (batch, n) bool, the picked entries.
    """
    n = candidates.shape[1]
    index_bits = max((n - 1).bit_length(), 1)
    if index_bits > 20:
        raise ValueError(f"rows of {n} entries are too long for the random ranking")
    bits = jax.random.bits(key, candidates.shape, jnp.uint32)
    random_part = (bits >> (index_bits + 1)) << index_bits
    scores = jnp.uint32(1 << 31) | random_part | jnp.arange(n, dtype=jnp.uint32)[None, :]
    scores = jnp.where(candidates, scores, jnp.uint32(0))
    ascending = jnp.sort(scores, axis=1)
    threshold = jnp.take_along_axis(ascending, jnp.clip(n - count, 0, n - 1)[:, None], axis=1)
    return candidates & (scores >= threshold) & (count[:, None] > 0)


def compute_mask_indices_jax(
    key: jax.Array,
    frame_mask: jax.Array,
    mask_prob: float,
    mask_length: int = 10,
    min_masks: int = 2,
) -> jax.Array:
    """Samples fairseq-style span masks with fixed shapes (jittable).

    Same distribution as `compute_mask_indices`. The `num_mask` distinct starts are the
    allowed start positions with the highest distinct random scores, and the batch trim
    keeps the masked frames with the `target` highest scores of a fresh draw.
    `mask_length` and `min_masks` are static Python ints; `mask_prob` may be a Python
    float or a traced scalar (e.g. a schedule), which must then lie in [0, 1].

    Args:
      key: PRNG key (fold the step in so every step masks differently).
      frame_mask: (batch, frames) bool, True on valid encoder frames, right-padded
        (not checked inside jit; entries past a row's valid count are never masked).
      mask_prob: As in `compute_mask_indices`.
      mask_length: Frames per span.
      min_masks: Smallest number of spans per non-empty row.

    Returns:
      (batch, frames) bool, True on masked frames.
    """
    _check_args(mask_prob if isinstance(mask_prob, (int, float)) else 0.0, mask_length, min_masks)
    if frame_mask.ndim != 2:
        raise ValueError(f"frame_mask must have shape (batch, frames), got {frame_mask.shape}")
    frame_mask = frame_mask.astype(bool)
    batch, frames = frame_mask.shape
    if frames == 0:
        return frame_mask
    key_round, key_starts, key_trim = jax.random.split(key, 3)

    sz = frame_mask.sum(axis=1).astype(jnp.int32)
    u = jax.random.uniform(key_round, (batch,))
    num_mask = jnp.floor(mask_prob * sz.astype(jnp.float32) / mask_length + u).astype(jnp.int32)
    num_mask = jnp.maximum(num_mask, min_masks)
    num_starts = sz - mask_length
    num_starts = jnp.where(num_starts <= num_mask, num_mask + 1, num_starts)

    # Starts may reach past `frames` for short rows (range [0, num_mask]), so the start
    # grid is widened; frames at or past `sz` are dropped below anyway.
    grid = max(frames, _max_num_spans(frames, mask_length, min_masks) + 1)
    positions = jnp.arange(grid)[None, :]
    allowed = (positions < num_starts[:, None]) & (sz[:, None] > 0)
    is_start = _random_subset(key_starts, allowed, jnp.minimum(num_mask, num_starts))

    # A frame t is masked when some start lies in (t - mask_length, t].
    covered = jnp.cumsum(is_start.astype(jnp.int32), axis=1)
    shifted = jnp.pad(covered, ((0, 0), (mask_length, 0)))[:, :grid]
    masked = ((covered - shifted) > 0)[:, :frames]
    masked = masked & (jnp.arange(frames)[None, :] < sz[:, None])

    count = masked.sum(axis=1)
    cap = jnp.where(sz > 0, jnp.minimum(count, sz - 1), jnp.iinfo(jnp.int32).max)
    target = jnp.min(cap)
    target = jnp.where(target == jnp.iinfo(jnp.int32).max, 0, target)
    return _random_subset(key_trim, masked, jnp.broadcast_to(target, (batch,)))
