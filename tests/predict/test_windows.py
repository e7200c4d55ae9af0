"""Window plan, frame-weighted combination and bucket batching (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from papt_jax.data.audio import FRAME_HOP, RECEPTIVE_FIELD, num_frames
from papt_jax.predict.windows import (
    Batching,
    BatchingError,
    combine,
    sliding_windows,
    split_windows,
    window_batches,
)


@pytest.mark.parametrize("num_samples", [400, 719, 720, 16_000, 48_123, 160_000 + 317])
@pytest.mark.parametrize("max_frames", [1, 7, 49, 1000])
def test_windows_tile_every_frame_once(num_samples, max_frames):
    windows = split_windows(3, num_samples, max_frames)
    total = int(num_frames(num_samples))
    assert sum(w.frames for w in windows) == total
    assert len(windows) == -(-total // max_frames)
    sizes = [w.frames for w in windows]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= max_frames
    first = 0
    for w in windows:
        assert w.item == 3
        assert w.start == FRAME_HOP * first  # window frames are the whole recording's frames
        assert int(num_frames(w.length)) == w.frames
        first += w.frames
    assert windows[-1].start + windows[-1].length == num_samples  # the tail is kept
    for w in windows[:-1]:
        assert w.length == RECEPTIVE_FIELD + FRAME_HOP * (w.frames - 1)


def test_a_recording_that_fits_is_one_whole_window():
    assert split_windows(0, 30_001, 100) == [split_windows(0, 30_001, 100)[0]]
    (w,) = split_windows(0, 30_001, 100)
    assert (w.start, w.length, w.frames) == (0, 30_001, int(num_frames(30_001)))
    with pytest.raises(ValueError, match="no encoder frame"):
        split_windows(0, 399, 10)


def test_combine_is_the_frame_weighted_mean_and_exact_for_one_window():
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(4, 5)).astype(np.float32)
    out = combine(pooled, np.asarray([10, 30, 7, 3]), np.asarray([0, 0, 1, 0]), 2)
    expected = (pooled[0] * 10.0 + pooled[1] * 30.0 + pooled[3] * 3.0) / 43.0
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(out[1], pooled[2])  # one window: its vector exactly
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="no window"):
        combine(pooled, np.ones(4), np.zeros(4, int), 2)


def test_batches_use_few_fixed_shapes_and_keep_every_window():
    batching = Batching(window_seconds=2.0, batch_seconds=8.0, num_buckets=3, row_multiple=2)
    lengths = batching.bucket_lengths
    assert len(lengths) == 3 and lengths == tuple(sorted(lengths))
    assert all((n - RECEPTIVE_FIELD) % FRAME_HOP == 0 for n in lengths)
    rng = np.random.default_rng(1)
    waves = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (500, 9_000, 31_999, 100_000)]
    windows = [
        w for i, x in enumerate(waves) for w in split_windows(i, len(x), batching.max_frames)
    ]
    seen, shapes = [], set()
    for batch in window_batches(waves, windows, batching):
        shapes.add(batch.audio.shape)
        assert batch.audio.shape[0] == batching.rows(batch.audio.shape[1])
        assert batch.audio.shape[0] % 2 == 0
        for row, index in enumerate(batch.windows):
            w = windows[index]
            np.testing.assert_array_equal(
                batch.audio[row, : w.length], waves[w.item][w.start : w.start + w.length]
            )
            assert batch.audio_mask[row].sum() == w.length
            assert not batch.audio[row, w.length :].any()
        assert not batch.audio_mask[len(batch.windows) :].any()  # padding rows are empty
        seen += list(batch.windows)
    assert sorted(seen) == list(range(len(windows)))
    assert len(shapes) <= 3


def test_bad_batching_settings_are_user_errors():
    with pytest.raises(BatchingError, match="window_seconds must be at least"):
        Batching(window_seconds=0.01)
    with pytest.raises(BatchingError, match="batch_seconds must be > 0"):
        Batching(batch_seconds=0)
    with pytest.raises(BatchingError, match="hop_seconds must lie between"):
        Batching(window_seconds=4.0, hop_seconds=5.0)
    with pytest.raises(BatchingError, match="hop_seconds must lie between"):
        Batching(hop_seconds=0.01)


@pytest.mark.parametrize("num_samples", [400, 16_000, 48_123, 160_000 + 317])
@pytest.mark.parametrize(("max_frames", "hop_frames"), [(49, 49), (49, 25), (49, 1), (7, 3)])
def test_sliding_windows_are_full_length_every_hop_and_end_with_the_recording(
    num_samples, max_frames, hop_frames
):
    windows = sliding_windows(2, num_samples, max_frames, hop_frames)
    total = int(num_frames(num_samples))
    if total <= max_frames:
        assert windows == [split_windows(2, num_samples, max_frames)[0]]  # whole recording
        return
    assert len(windows) == -(-(total - max_frames) // hop_frames) + 1
    firsts = [w.start // FRAME_HOP for w in windows]
    assert all(w.start % FRAME_HOP == 0 and w.item == 2 for w in windows)
    assert firsts[:-1] == [i * hop_frames for i in range(len(windows) - 1)]
    assert firsts[-1] == total - max_frames  # the last one is aligned to the end
    assert 0 < firsts[-1] - firsts[-2] <= hop_frames
    assert all(w.frames == max_frames == int(num_frames(w.length)) for w in windows)
    assert windows[-1].start + windows[-1].length == num_samples  # the tail is kept
    covered = np.zeros(total, bool)
    for first in firsts:
        covered[first : first + max_frames] = True
    assert covered.all()


def test_batching_picks_tiling_or_sliding_windows():
    tiling, sliding = Batching(window_seconds=1.0), Batching(window_seconds=1.0, hop_seconds=0.5)
    assert tiling.hop_frames is None and sliding.hop_frames == 25
    assert tiling.windows(1, 80_000) == split_windows(1, 80_000, tiling.max_frames)
    assert sliding.windows(1, 80_000) == sliding_windows(1, 80_000, 49, 25)
    assert Batching(window_seconds=1.0, hop_seconds=1.0).hop_frames == 49  # at most W


@pytest.mark.parametrize("hop_seconds", [None, 0.5])
@pytest.mark.parametrize("least", [0.3, 1.4, 2.0])
def test_window_settings_that_could_cut_a_window_below_the_minimum_are_refused(hop_seconds, least):
    """`check_shortest` passes exactly when no window of any longer recording is shorter
    than `least` seconds, and its hint names a window_seconds that passes."""

    def shortest_window(batching) -> int:
        most = batching.max_frames
        lengths = [
            w.length
            for frames in range(most + 1, 4 * most + 3)
            for w in batching.windows(0, RECEPTIVE_FIELD + FRAME_HOP * (frames - 1))
        ]
        return min(lengths)

    passed = []
    for window_seconds in np.arange(0.6, 5.0, 0.1):
        batching = Batching(window_seconds=float(window_seconds), hop_seconds=hop_seconds)
        if hop_seconds is not None and hop_seconds > window_seconds:
            continue
        fits = shortest_window(batching) >= least * 16_000
        if fits:
            batching.check_shortest(least)
            passed.append(window_seconds)
            continue
        with pytest.raises(BatchingError, match="below this model's minimum duration") as err:
            batching.check_shortest(least)
        hinted = float(err.value.hint.split()[-1])
        Batching(window_seconds=hinted, hop_seconds=hop_seconds).check_shortest(least)
    assert passed and passed[0] > (least if hop_seconds else 1.9 * least)
