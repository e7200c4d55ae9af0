"""Span masking: fairseq semantics on the host, the same distribution under jit."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papt_jax.masking import compute_mask_indices, compute_mask_indices_jax

MASK_LENGTH = 10


def _frame_mask(lengths, frames):
    return np.arange(frames)[None, :] < np.asarray(lengths)[:, None]


BATCH, FRAMES = 8, 200  # every JAX call is padded to this shape: one compile per config


CHUNK = 500  # keys per device call, so the trial count does not change shapes either


@functools.partial(jax.jit, static_argnames=("min_masks",))
def _jax_mask_many(keys, frame_mask, mask_prob, min_masks=2):
    """One independent batch per key: (CHUNK,) keys -> (CHUNK, batch, frames).

    mask_prob is traced, so one compile per min_masks serves every test.
    """
    return jax.lax.map(
        lambda k: compute_mask_indices_jax(k, frame_mask, mask_prob, MASK_LENGTH, min_masks), keys
    )


def _masks(impl, frame_mask, mask_prob, trials, seed=0, min_masks=2):
    """`trials` independent masks of one batch, (trials, batch, frames) bool."""
    if impl == "host":
        rng = np.random.default_rng(seed)
        return np.stack(
            [
                compute_mask_indices(rng, frame_mask, mask_prob, MASK_LENGTH, min_masks)
                for _ in range(trials)
            ]
        )
    # Empty rows and padded frames change nothing, so padding to one shape is free.
    batch, frames = frame_mask.shape
    padded = np.zeros((BATCH, FRAMES), bool)
    padded[:batch, :frames] = frame_mask
    keys = jax.random.split(jax.random.key(seed), -(-trials // CHUNK) * CHUNK)
    prob = jnp.float32(mask_prob)
    masks = np.concatenate(
        [
            np.asarray(_jax_mask_many(chunk, jnp.asarray(padded), prob, min_masks))
            for chunk in keys.reshape(-1, CHUNK)
        ]
    )[:trials]
    assert not masks[:, batch:].any() and not masks[:, :, frames:].any()
    return masks[:, :batch, :frames]


def _both(frame_mask, mask_prob, trials, seed=0, min_masks=2):
    return {
        impl: _masks(impl, frame_mask, mask_prob, trials, seed, min_masks)
        for impl in ("host", "jax")
    }


def _expected_count_one_row(sz, mask_prob, min_masks=2):
    """Exact E[#masked frames] of a lone long row (no trim): distinct uniform starts in
    [0, sz - L), random rounding of the span count, overlap allowed."""
    a = mask_prob * sz / MASK_LENGTH
    low = math.floor(a)
    expected = 0.0
    for n, p in ((low, 1 - (a - low)), (low + 1, a - low)):
        n = max(n, min_masks)
        starts = sz - MASK_LENGTH
        assert starts > n
        for t in range(sz):
            window = min(t, starts - 1) - max(0, t - MASK_LENGTH + 1) + 1
            window = max(window, 0)
            p_free = math.comb(starts - window, n) / math.comb(starts, n)
            expected += p * (1 - p_free)
    return expected


def _runs(row):
    """Lengths of the maximal runs of True in a 1-D bool array."""
    padded = np.concatenate([[0], row.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


@pytest.mark.parametrize("impl", ["host", "jax"])
def test_padding_never_masked_and_rows_share_count(impl):
    lengths = [120, 57, 200, 33, 0, 91]
    frame_mask = _frame_mask(lengths, 200)
    masks = _masks(impl, frame_mask, 0.8, trials=50)
    assert not (masks & ~frame_mask[None]).any()
    counts = masks.sum(axis=2)  # (trials, batch)
    non_empty = np.asarray(lengths) > 0
    assert (counts[:, ~non_empty] == 0).all()
    assert (counts[:, non_empty] == counts[:, non_empty][:, :1]).all()
    assert (counts[:, non_empty] > 0).all()


@pytest.mark.parametrize("impl", ["host", "jax"])
def test_lone_row_spans_have_length_ten(impl):
    # A lone row is never trimmed, so every masked run is one or more whole spans,
    # and (fairseq's range) no span reaches the last valid frame.
    masks = _masks(impl, _frame_mask([150], 180), 0.4, trials=100)[:, 0]
    for row in masks:
        runs = _runs(row)
        assert runs.size >= 2
        assert (runs >= MASK_LENGTH).all()
        assert not row[149:].any()


@pytest.mark.parametrize("impl", ["host", "jax"])
def test_masked_fraction_matches_exact_expectation(impl):
    sz, mask_prob, trials = 100, 0.8, 2000
    counts = _masks(impl, _frame_mask([sz], sz), mask_prob, trials).sum(axis=(1, 2))
    expected = _expected_count_one_row(sz, mask_prob)
    stderr = counts.std() / math.sqrt(trials)
    assert abs(counts.mean() - expected) < 4 * stderr + 0.05
    # Overlap keeps the masked fraction well below mask_prob.
    assert expected / sz < mask_prob - 0.2


@pytest.mark.slow
def test_host_and_jax_agree_in_distribution_on_mixed_batches():
    lengths = [150, 40, 97, 150, 66, 12, 120, 149]
    frame_mask = _frame_mask(lengths, 150)
    trials = 1500
    both = _both(frame_mask, 0.65, trials, seed=3)
    count_host = both["host"].sum(axis=2)[:, 0]
    count_jax = both["jax"].sum(axis=2)[:, 0]
    pooled = math.sqrt(count_host.var() / trials + count_jax.var() / trials)
    assert abs(count_host.mean() - count_jax.mean()) < 4 * pooled + 0.05
    assert count_host.std() == pytest.approx(count_jax.std(), rel=0.15)
    # Where the masked frames sit: per-position frequency, binned by 10 frames.
    freq_host = both["host"].mean(axis=0).reshape(len(lengths), -1, 10).mean(axis=-1)
    freq_jax = both["jax"].mean(axis=0).reshape(len(lengths), -1, 10).mean(axis=-1)
    assert np.abs(freq_host - freq_jax).max() < 0.05


@pytest.mark.parametrize("impl", ["host", "jax"])
def test_min_masks_applies_to_short_low_probability_rows(impl):
    # mask_prob * sz / L = 0.3 spans on average, yet two distinct spans are forced.
    masks = _masks(impl, _frame_mask([30], 30), 0.1, trials=200)
    assert (masks.sum(axis=(1, 2)) >= MASK_LENGTH + 1).all()
    masks = _masks(impl, _frame_mask([30], 30), 0.1, trials=200, min_masks=0)
    assert (masks.sum(axis=(1, 2)) == 0).mean() > 0.5


@pytest.mark.parametrize("impl", ["host", "jax"])
def test_rows_too_short_for_a_span(impl):
    lengths = [0, 1, 2, 5, 10, 11, 12, 60]
    frame_mask = _frame_mask(lengths, 60)
    masks = _masks(impl, frame_mask, 0.8, trials=100)
    assert not (masks & ~frame_mask[None]).any()
    counts = masks.sum(axis=2)
    # The one-frame row caps the whole batch at zero masked frames.
    assert (counts == 0).all()
    lengths = [2, 5, 10, 11, 12, 60]
    frame_mask = _frame_mask(lengths, 60)
    masks = _masks(impl, frame_mask, 0.8, trials=100)
    counts = masks.sum(axis=2)
    assert (counts == 1).all()  # capped at sz - 1 of the two-frame row
    assert (counts < np.asarray(lengths)[None]).all()


@pytest.mark.parametrize("impl", ["host", "jax"])
def test_all_rows_empty(impl):
    masks = _masks(impl, np.zeros((3, 20), bool), 0.8, trials=3)
    assert not masks.any()


def test_same_seed_same_mask_other_seed_differs():
    frame_mask = _frame_mask([100, 80], 100)
    a = compute_mask_indices(np.random.default_rng(7), frame_mask, 0.8)
    b = compute_mask_indices(np.random.default_rng(7), frame_mask, 0.8)
    c = compute_mask_indices(np.random.default_rng(8), frame_mask, 0.8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    a, b = _masks("jax", frame_mask, 0.8, trials=2, seed=7)
    again = _masks("jax", frame_mask, 0.8, trials=2, seed=7)
    c = _masks("jax", frame_mask, 0.8, trials=1, seed=8)[0]
    np.testing.assert_array_equal(a, again[0])
    assert not np.array_equal(a, b)  # consecutive keys differ
    assert not np.array_equal(a, c)
    assert a.shape == frame_mask.shape and a.dtype == np.bool_


def test_jax_version_under_plain_jit():
    frame_mask = jnp.asarray(_frame_mask([100, 80, 30], 100))
    masked = jax.jit(lambda key: compute_mask_indices_jax(key, frame_mask, 0.65))(jax.random.key(0))
    assert masked.shape == frame_mask.shape and masked.dtype == jnp.bool_
    counts = np.asarray(masked).sum(axis=1)
    assert counts[0] == counts[1] == counts[2] > 0
    assert not np.asarray(masked & ~frame_mask).any()
    no_frames = jnp.zeros((2, 0), bool)
    assert compute_mask_indices_jax(jax.random.key(0), no_frames, 0.8).shape == (2, 0)
    host = compute_mask_indices(np.random.default_rng(0), np.zeros((2, 0), bool), 0.8)
    assert host.shape == (2, 0)


def test_bad_inputs_raise():
    rng = np.random.default_rng(0)
    not_right_padded = np.array([[True, False, True]])
    with pytest.raises(ValueError, match="right-padded"):
        compute_mask_indices(rng, not_right_padded, 0.5)
    with pytest.raises(ValueError, match="bool"):
        compute_mask_indices(rng, np.ones((2, 3), np.int32), 0.5)
    with pytest.raises(ValueError, match="mask_prob"):
        compute_mask_indices(rng, np.ones((2, 3), bool), 1.5)
    with pytest.raises(ValueError, match="mask_length"):
        compute_mask_indices_jax(jax.random.key(0), jnp.ones((2, 3), bool), 0.5, mask_length=0)
