"""Grain pipeline (papt_jax.data.pipeline): buckets, crops, targets, sharding, resumption."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from papt_jax.data import audio
from papt_jax.data import pipeline as pl

REPO = Path(__file__).resolve().parents[1]


def _records(lengths):
    """In-memory records whose sample value is the frame index (crop offsets are visible)."""
    return [
        {
            "key": f"utt{i:03d}".encode(),
            "audio": (np.arange(n) // audio.FRAME_HOP).astype(np.int16),
            "speaker_index": np.int32(i % 7),
            "speaker": f"spk{i % 7}".encode(),
            "arousal": np.float32(1 + i % 6),
            "valence": np.float32(7 - i % 6),
        }
        for i, n in enumerate(lengths)
    ]


def _frame_targets(source):
    """Frame j of every utterance is labelled j (so crop alignment can be checked)."""
    return {r["key"].decode(): np.arange(audio.num_frames(len(r["audio"]))) for r in source}


@pytest.fixture(scope="module")
def data():
    lengths = np.random.default_rng(0).integers(500, 12000, size=61)
    source = _records(lengths)
    index = pl.DatasetIndex(tuple(r["key"].decode() for r in source), lengths)
    return source, index


def _config(**kwargs):
    base = dict(
        batch_size=4,
        device_count=2,
        process_index=0,
        process_count=1,
        num_buckets=4,
        read_threads=2,
    )
    return pl.PipelineConfig(**{**base, **kwargs})


def _keys(batches):
    return [tuple(b["key"]) for b in batches]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def test_fit_bucket_lengths_is_optimal_and_on_the_frame_grid():
    lengths = np.random.default_rng(1).integers(400, 6000, size=40)
    buckets = pl.fit_bucket_lengths(lengths, num_buckets=3)
    grid = np.array([audio.frame_grid_ceil(n) for n in lengths])
    assert len(buckets) == 3 and buckets[-1] == grid.max()
    assert all((b - 400) % 320 == 0 for b in buckets)

    def padded(bs):
        return sum(min(b for b in bs if b >= g) for g in grid)

    values = sorted(set(grid.tolist()))
    brute = min(padded((*c, values[-1])) for c in itertools.combinations(values[:-1], 2))
    assert padded(buckets) == brute
    capped = pl.fit_bucket_lengths(lengths, num_buckets=8, max_length=3000)
    assert capped[-1] == audio.frame_grid_floor(3000) == 2960 and len(capped) <= 8


def test_batches_hold_the_records_cropped_and_padded(data):
    source, index = data
    pipe = pl.BatchPipeline(
        source, index, _config(max_length=6000, num_epochs=1), _frame_targets(source)
    )
    by_key = {r["key"].decode(): r for r in source}
    batches = list(pipe)
    assert len(batches) == pipe.batches_per_epoch > 0
    assert {b["audio"].shape[1] for b in batches} <= set(pipe.bucket_lengths)
    assert pipe.bucket_lengths[-1] == audio.frame_grid_floor(6000)
    for batch in batches:
        rows, length = batch["audio"].shape
        assert rows == 4 and batch["example_mask"].all()
        assert batch["audio"].dtype == np.float32 and batch["audio_mask"].dtype == bool
        assert batch["targets"].shape == (rows, (length - 400) // 320 + 1)
        assert batch["targets"].dtype == np.int32 and batch["speaker"].dtype == np.int32
        for row, key in enumerate(batch["key"]):
            record = by_key[key]
            n = len(record["audio"])
            valid = int(batch["audio_mask"][row].sum())
            assert valid == min(n, pipe.planner.crop_length)
            assert (
                not batch["audio_mask"][row, valid:].any() and not batch["audio"][row, valid:].any()
            )
            first_frame = int(round(batch["audio"][row, 0] * 32768))
            start = first_frame * 320  # the crop start, readable from the frame-index audio
            np.testing.assert_array_equal(
                batch["audio"][row, :valid] * 32768, record["audio"][start : start + valid]
            )
            frames = (valid - 400) // 320 + 1
            np.testing.assert_array_equal(
                batch["targets"][row, :frames], np.arange(first_frame, first_frame + frames)
            )
            assert (batch["targets"][row, frames:] == -1).all()
            assert batch["speaker"][row] == record["speaker_index"]
            assert batch["speaker_id"][row] == record["speaker"].decode()
            assert batch["arousal"][row] == record["arousal"]
            assert batch["valence"][row] == record["valence"]


def test_random_crops_vary_by_epoch_but_not_by_run(data):
    source, index = data
    config = _config(max_length=2000, num_epochs=2)
    one = list(pl.BatchPipeline(source, index, config))
    _same(one, list(pl.BatchPipeline(source, index, config)))
    starts = {}  # key -> crop starts (in frames) over the two epochs
    for batch in one:
        for row, key in enumerate(batch["key"]):
            starts.setdefault(key, []).append(int(round(batch["audio"][row, 0] * 32768)))
    twice = [
        s
        for k, s in starts.items()
        if len(s) == 2 and index.num_samples[index.keys.index(k)] > 8000
    ]
    assert twice and any(a != b for a, b in twice)


def test_same_seed_same_batches_other_seed_other_order(data):
    source, index = data
    first = list(pl.BatchPipeline(source, index, _config(seed=3, num_epochs=2)))
    again = list(pl.BatchPipeline(source, index, _config(seed=3, num_epochs=2, read_threads=0)))
    _same(first, again)
    other = list(pl.BatchPipeline(source, index, _config(seed=4, num_epochs=2)))
    assert _keys(first) != _keys(other)
    half = len(first) // 2
    assert _keys(first[:half]) != _keys(first[half:])  # epochs are shuffled differently


def test_restored_iterator_continues_exactly(data):
    source, index = data
    targets = _frame_targets(source)
    pipe = pl.BatchPipeline(source, index, _config(max_length=5000), targets)  # endless
    per_epoch = pipe.batches_per_epoch
    reference = list(itertools.islice(pipe.iterator(), per_epoch + 6))
    iterator = pipe.iterator()
    for _ in range(per_epoch - 2):  # stop just before an epoch boundary
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    fresh = pl.BatchPipeline(source, index, _config(max_length=5000, read_threads=0), targets)
    resumed = fresh.iterator(state)
    _same([next(resumed) for _ in range(8)], reference[per_epoch - 2 :])
    with pytest.raises(ValueError, match="another pipeline"):
        pl.BatchPipeline(source, index, _config(seed=9)).iterator(state)


def test_eval_mode_yields_every_utterance_once_in_a_fixed_order(data):
    source, index = data
    config = _config(mode="eval", batch_size=8, bucket_lengths=(4000, 8000, 12000))
    batches = list(pl.BatchPipeline(source, index, config))
    assert all(b["audio"].shape[0] == 8 for b in batches)
    real = [k for b in batches for k, m in zip(b["key"], b["example_mask"], strict=True) if m]
    assert sorted(real) == sorted(index.keys) and len(real) == len(index.keys)
    lengths = dict(zip(index.keys, index.num_samples, strict=True))
    bucket = [int(np.searchsorted((4000, 8000, 12000), lengths[k])) for k in real]
    assert list(zip(bucket, real, strict=True)) == sorted(
        zip(bucket, real, strict=True)
    )  # ordered by (bucket, key)
    padded = [b for b in batches if not b["example_mask"].all()]
    assert 1 <= len(padded) <= 3  # at most one partial batch per bucket
    for b in padded:
        pad = ~b["example_mask"]
        assert not b["audio_mask"][pad].any() and (b["speaker"][pad] == -1).all()
        assert set(b["key"][pad]) == {""} and set(b["speaker_id"][pad]) == {""}
    _same(batches, list(pl.BatchPipeline(source, index, config)))


def test_eval_crop_is_centred_and_frame_aligned(data):
    source, index = data
    config = _config(mode="eval", batch_size=2, bucket_lengths=(1040,))
    batches = list(pl.BatchPipeline(source, index, config))
    for b in batches:
        for row, key in enumerate(b["key"]):
            if not key:
                continue
            n = index.num_samples[index.keys.index(key)]
            expected_start = 320 * (max(n - 1040, 0) // 320 // 2)
            assert int(round(b["audio"][row, 0] * 32768)) * 320 == expected_start


def test_processes_split_each_global_batch(data):
    source, index = data
    for mode in ("train", "eval"):
        whole = list(pl.BatchPipeline(source, index, _config(mode=mode, num_epochs=1)))
        parts = [
            list(
                pl.BatchPipeline(
                    source,
                    index,
                    _config(mode=mode, num_epochs=1, process_index=p, process_count=2),
                )
            )
            for p in (0, 1)
        ]
        assert len(parts[0]) == len(parts[1]) == len(whole)
        for w, a, b in zip(whole, *parts, strict=True):
            assert a["audio"].shape == b["audio"].shape == (2, w["audio"].shape[1])
            np.testing.assert_array_equal(np.concatenate([a["audio"], b["audio"]]), w["audio"])
            assert list(a["key"]) + list(b["key"]) == list(w["key"])


def test_batch_by_seconds(data):
    source, index = data
    config = _config(
        batch_size=None,
        batch_seconds=3.0,
        device_count=4,
        bucket_lengths=(2000, 12000),
        num_epochs=1,
        drop_remainder=False,
    )
    pipe = pl.BatchPipeline(source, index, config)
    # 48000 // 2000 = 24 rows; 48000 // 12000 = 4 rows (both multiples of 4 devices).
    assert pipe.batch_sizes == (24, 4)
    batches = list(pipe)
    assert sum(int(b["example_mask"].sum()) for b in batches) == len(index.keys)
    assert all(b["audio"].size <= 48000 for b in batches)
    assert {b["audio"].shape for b in batches} == {(24, 2000), (4, 12000)}
    # 1 s = 16000 samples holds one 12000-sample row: fewer than the 4 devices.
    with pytest.raises(ValueError, match="too small"):
        pl.BatchPipeline(
            source,
            index,
            _config(
                batch_size=None, batch_seconds=1.0, device_count=4, bucket_lengths=(2000, 12000)
            ),
        )


def test_config_and_targets_errors(data):
    source, index = data
    with pytest.raises(ValueError, match="exactly one"):
        pl.PipelineConfig(batch_size=4, batch_seconds=2.0)
    with pytest.raises(ValueError, match="multiple of the device count"):
        pl.BatchPipeline(source, index, _config(batch_size=3))
    with pytest.raises(ValueError, match="increasing"):
        pl.PipelineConfig(bucket_lengths=(8000, 4000))
    targets = _frame_targets(source)
    del targets["utt005"]
    with pytest.raises(pl.TargetsError, match="no frame targets for utterance 'utt005'"):
        list(pl.BatchPipeline(source, index, _config(mode="eval"), targets))
    targets = _frame_targets(source)
    targets["utt000"] = targets["utt000"][:-3]  # 10282 samples: 31 frames, 28 labels
    with pytest.raises(pl.TargetsError, match="'utt000' have shape"):
        list(pl.BatchPipeline(source, index, _config(mode="eval"), targets))


def test_summaries_count_shapes_and_padding(data):
    source, index = data
    pipe = pl.BatchPipeline(source, index, _config(num_epochs=1))
    from_batches = pl.summarize_batches(pipe)
    from_plan = pl.summarize_plan(pipe.planner)
    assert from_batches == from_plan
    assert len(from_plan.shapes) <= 4 and 0.5 < from_plan.real_share <= 1.0
    single = pl.summarize_plan(pl.BatchPipeline(source, index, _config(num_buckets=1)).planner)
    assert from_plan.real_share > single.real_share


def test_concat_source_reads_parts_in_order(data):
    source, index = data
    whole = pl.ConcatSource([source[:10], source[10:11], source[11:]])
    assert len(whole) == len(source)
    assert [r["key"] for r in whole.__getitems__([60, 0, 10, 11, 9])] == [
        source[i]["key"] for i in (60, 0, 10, 11, 9)
    ]
    assert whole[37]["key"] == source[37]["key"]
    with pytest.raises(IndexError):
        whole[61]
    pipe = pl.BatchPipeline(whole, index, _config(mode="eval"))
    _same(list(pipe), list(pl.BatchPipeline(source, index, _config(mode="eval"))))
    assert pl.split_names("train+test_b") == pl.split_names(["train", "test_b"])


END_TO_END = """
import sys, tempfile, json, itertools
from pathlib import Path
import numpy as np
from papt_jax.data import audio, msp_podcast, pipeline, prepare, synthetic

tmp = Path(tempfile.mkdtemp())
corpus = synthetic.generate_corpus(tmp / "corpus", preset="smoke", seed=0)
config = msp_podcast.CorpusConfig(corpus_dir=corpus,
                                  new_labels_file="Labels_new/labels_consensus.csv",
                                  test_a_seconds=5.0)
out = prepare.prepare(config, tmp / "data")
counts = {}
for split in ("train", "validation", "test_a", "test_b", "test_c"):
    source, index = pipeline.open_split(tmp / "data", split)
    targets = {k: np.zeros(audio.num_frames(n), np.int16) + 3
               for k, n in zip(index.keys, index.num_samples)}
    cfg = pipeline.PipelineConfig(mode="eval", batch_size=8, device_count=8, num_buckets=3)
    pipe = pipeline.BatchPipeline(source, index, cfg, targets)
    keys = [k for b in pipe for k, m in zip(b["key"], b["example_mask"], strict=True) if m]
    assert sorted(keys) == sorted(index.keys), split
    counts[split] = len(keys)
both = pipeline.make_pipeline(tmp / "data", ("train", "test_b"), pipeline.PipelineConfig(
    mode="eval", batch_size=8, device_count=8))
keys = [k for b in both for k, m in zip(b["key"], b["example_mask"]) if m]
assert len(keys) == len(set(keys)) == counts["train"] + counts["test_b"]
speakers = json.loads((out / "speakers.json").read_text())["speakers"]
train = pipeline.make_pipeline(tmp / "data", "train", pipeline.PipelineConfig(
    batch_size=8, device_count=8, max_length=24000, seed=1))
first = list(itertools.islice(train.iterator(), 5))
it = train.iterator(); next(it); next(it)
state = json.dumps(it.get_state())
resumed = train.iterator(json.loads(state))
for a, b in zip(first[2:], [next(resumed) for _ in range(3)]):
    assert (a["audio"] == b["audio"]).all() and list(a["key"]) == list(b["key"])
assert all(0 <= s < len(speakers) for b in first for s in b["speaker"])
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print(json.dumps({"counts": counts, "speakers": len(speakers)}))
"""


@pytest.mark.slow
def test_end_to_end_smoke_corpus_without_tensorflow():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(END_TO_END)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # smoke preset: 10 train, 3 dev, 4 test speakers with 6 utterances each, 3 new speakers.
    assert summary["counts"]["train"] == 60 and summary["counts"]["validation"] == 18
    assert summary["counts"]["test_a"] + summary["counts"]["test_b"] == 24
    assert summary["counts"]["test_c"] > 0
    assert summary["speakers"] == 17
