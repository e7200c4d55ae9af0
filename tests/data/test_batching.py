"""The batch plan (papt_jax.data.batching): buckets, batch sizes, epochs, from lengths alone."""

import itertools

import numpy as np
import pytest
from fixtures.records import small_config

from papt_jax.data import audio
from papt_jax.data import batching as bt


@pytest.fixture(scope="module")
def index():
    lengths = np.random.default_rng(0).integers(500, 12000, size=61)
    return bt.DatasetIndex(tuple(f"utt{i:03d}" for i in range(len(lengths))), lengths)


def _real_share(planner: bt.BatchPlanner) -> float:
    """Share of real samples over one epoch's global batches."""
    real = total = 0
    for planned in planner.plan(0):
        real += int(planner.lengths[list(planned.indices)].sum())
        total += planner.batch_sizes[planned.bucket] * planner.bucket_lengths[planned.bucket]
    return real / total


def test_fit_bucket_lengths_is_optimal_and_on_the_frame_grid():
    lengths = np.random.default_rng(1).integers(400, 6000, size=40)
    buckets = bt.fit_bucket_lengths(lengths, num_buckets=3)
    grid = np.array([audio.frame_grid_ceil(n) for n in lengths])
    assert len(buckets) == 3 and buckets[-1] == grid.max()
    assert all((b - 400) % 320 == 0 for b in buckets)

    def padded(bs):
        return sum(min(b for b in bs if b >= g) for g in grid)

    values = sorted(set(grid.tolist()))
    brute = min(padded((*c, values[-1])) for c in itertools.combinations(values[:-1], 2))
    assert padded(buckets) == brute
    capped = bt.fit_bucket_lengths(lengths, num_buckets=8, max_length=3000)
    assert capped[-1] == audio.frame_grid_floor(3000) == 2960 and len(capped) <= 8


def test_buckets_cut_padding_and_bound_the_shapes(index):
    planner = bt.BatchPlanner(index, small_config(num_epochs=1))
    shapes = {
        (planner.batch_sizes[b.bucket], planner.bucket_lengths[b.bucket]) for b in planner.plan(0)
    }
    assert len(shapes) <= 4 and 0.5 < _real_share(planner) <= 1.0
    single = bt.BatchPlanner(index, small_config(num_buckets=1))
    assert _real_share(planner) > _real_share(single)


def test_train_plan_uses_each_record_at_most_once_per_epoch_and_reshuffles(index):
    planner = bt.BatchPlanner(index, small_config(seed=3))
    epochs = [planner.plan(e) for e in (0, 1)]
    for plan in epochs:
        used = [i for p in plan for i in p.indices]
        assert len(used) == len(set(used)) and len(plan) == planner.batches_per_epoch
        for p in plan:
            assert (planner.lengths[list(p.indices)] <= planner.bucket_lengths[p.bucket]).all()
    assert epochs[0] != epochs[1]
    assert bt.BatchPlanner(index, small_config(seed=3)).plan(1) == epochs[1]


def test_crop_starts_lie_on_the_frame_grid(index):
    train = bt.BatchPlanner(index, small_config(max_length=2000))
    evaluation = bt.BatchPlanner(index, small_config(mode="eval", max_length=2000))
    for record, length in enumerate(index.num_samples):
        start = train.crop_start(record, int(length), epoch=0)
        assert start % 320 == 0 and 0 <= start <= max(int(length) - train.crop_length, 0)
        centred = evaluation.crop_start(record, int(length), epoch=0)
        assert centred == 320 * (max(int(length) - evaluation.crop_length, 0) // 320 // 2)


def test_batch_sizes_by_seconds(index):
    config = small_config(
        batch_size=None,
        batch_seconds=3.0,
        device_count=4,
        bucket_lengths=(2000, 12000),
        num_epochs=1,
        drop_remainder=False,
    )
    planner = bt.BatchPlanner(index, config)
    # 48000 // 2000 = 24 rows; 48000 // 12000 = 4 rows (both multiples of 4 devices).
    assert planner.batch_sizes == (24, 4)
    assert sorted(i for p in planner.plan(0) for i in p.indices) == list(range(len(index.keys)))
    # 1 s = 16000 samples holds one 12000-sample row: fewer than the 4 devices.
    with pytest.raises(ValueError, match="too small"):
        bt.BatchPlanner(
            index,
            small_config(
                batch_size=None, batch_seconds=1.0, device_count=4, bucket_lengths=(2000, 12000)
            ),
        )


def test_config_errors(index):
    with pytest.raises(ValueError, match="exactly one"):
        bt.PipelineConfig(batch_size=4, batch_seconds=2.0)
    with pytest.raises(ValueError, match="multiple of the device count"):
        bt.BatchPlanner(index, small_config(batch_size=3))
    with pytest.raises(ValueError, match="increasing"):
        bt.PipelineConfig(bucket_lengths=(8000, 4000), batch_size=4)
