"""Grain input pipeline (papt_jax.data.input_pipeline): loading, crops, targets, resumption."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fixtures.records import frame_targets, index_of, records, small_config

from papt_jax.data import audio
from papt_jax.data import input_pipeline as ip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data():
    lengths = np.random.default_rng(0).integers(500, 12000, size=61)
    source = records(lengths)
    return source, index_of(source)


def _keys(batches):
    return [tuple(b["key"]) for b in batches]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def test_batches_hold_the_records_cropped_and_padded(data):
    source, index = data
    pipe = ip.BatchPipeline(
        source, index, small_config(max_length=6000, num_epochs=1), frame_targets(source)
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


def test_crop_to_shortest_cuts_every_row_to_the_batch_shortest(data):
    """fairseq's `pad_audio: false`: equal valid lengths, random frame-aligned windows."""
    source, index = data
    cfg = small_config(max_length=6000, num_epochs=2, crop_to_shortest=True)
    pipe = ip.BatchPipeline(source, index, cfg, frame_targets(source))
    by_key = {r["key"].decode(): r for r in source}
    starts = set()
    for batch in pipe:
        lengths = [min(len(by_key[k]["audio"]), pipe.planner.crop_length) for k in batch["key"]]
        kept = audio.frame_grid_floor(min(lengths))
        assert batch["audio"].shape[1] in pipe.bucket_lengths  # the bucket's shape: no recompile
        np.testing.assert_array_equal(batch["audio_mask"].sum(axis=1), kept)
        frames = (kept - 400) // 320 + 1
        for row, key in enumerate(batch["key"]):
            first_frame = int(round(batch["audio"][row, 0] * 32768))
            start = first_frame * 320
            starts.add(start)
            np.testing.assert_array_equal(
                batch["audio"][row, :kept] * 32768, by_key[key]["audio"][start : start + kept]
            )
            np.testing.assert_array_equal(
                batch["targets"][row, :frames], np.arange(first_frame, first_frame + frames)
            )
            assert (batch["targets"][row, frames:] == -1).all()
    assert len(starts) > 1  # rows longer than the shortest start at random frames
    fraction = pipe.planner.shortest_crop_fraction(0)
    assert 0.0 < fraction < 1.0
    plain = ip.BatchPipeline(source, index, small_config(max_length=6000, num_epochs=2))
    assert plain.planner.shortest_crop_fraction(0) == fraction  # same plan, padded instead


def test_crop_to_shortest_is_for_training_only():
    with pytest.raises(ValueError, match="train mode"):
        small_config(mode="eval", crop_to_shortest=True)


def test_random_crops_vary_by_epoch_but_not_by_run(data):
    source, index = data
    config = small_config(max_length=2000, num_epochs=2)
    one = list(ip.BatchPipeline(source, index, config))
    _same(one, list(ip.BatchPipeline(source, index, config)))
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
    first = list(ip.BatchPipeline(source, index, small_config(seed=3, num_epochs=2)))
    config = small_config(seed=3, num_epochs=2, read_threads=0)
    again = list(ip.BatchPipeline(source, index, config))
    _same(first, again)
    other = list(ip.BatchPipeline(source, index, small_config(seed=4, num_epochs=2)))
    assert _keys(first) != _keys(other)
    half = len(first) // 2
    assert _keys(first[:half]) != _keys(first[half:])  # epochs are shuffled differently


def test_restored_iterator_continues_exactly(data):
    source, index = data
    targets = frame_targets(source)
    pipe = ip.BatchPipeline(source, index, small_config(max_length=5000), targets)  # endless
    per_epoch = pipe.batches_per_epoch
    reference = list(itertools.islice(pipe.iterator(), per_epoch + 6))
    iterator = pipe.iterator()
    for _ in range(per_epoch - 2):  # stop just before an epoch boundary
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    fresh = ip.BatchPipeline(source, index, small_config(max_length=5000, read_threads=0), targets)
    resumed = fresh.iterator(state)
    _same([next(resumed) for _ in range(8)], reference[per_epoch - 2 :])
    with pytest.raises(ValueError, match="another pipeline"):
        ip.BatchPipeline(source, index, small_config(seed=9)).iterator(state)


@pytest.mark.slow
def test_a_state_saved_with_worker_processes_resumes_without_them(data):
    """Before: Grain's own state was saved, and restoring a worker pool's state into an
    iterator without workers failed (KeyError: 'next_index'), although the worker count is
    documented to change nothing."""
    source, index = data
    with_workers = ip.BatchPipeline(source, index, small_config(max_length=5000, worker_count=2))
    iterator = with_workers.iterator()
    reference = [next(iterator) for _ in range(7)]
    state = json.loads(json.dumps(iterator.get_state()))
    iterator.close()
    assert state["position"] == 7
    plain = ip.BatchPipeline(source, index, small_config(max_length=5000))
    _same([next(plain.iterator(json.loads(json.dumps({**state, "position": 4}))))], reference[4:5])
    with plain.iterator(state) as resumed, with_workers.iterator(state) as again:
        _same([next(resumed) for _ in range(3)], [next(again) for _ in range(3)])
        assert resumed.get_state()["position"] == 10


def test_eval_mode_yields_every_utterance_once_in_a_fixed_order(data):
    source, index = data
    config = small_config(mode="eval", batch_size=8, bucket_lengths=(4000, 8000, 12000))
    batches = list(ip.BatchPipeline(source, index, config))
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
    _same(batches, list(ip.BatchPipeline(source, index, config)))


def test_eval_crop_is_centred_and_frame_aligned(data):
    source, index = data
    config = small_config(mode="eval", batch_size=2, bucket_lengths=(1040,))
    batches = list(ip.BatchPipeline(source, index, config))
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
        whole = list(ip.BatchPipeline(source, index, small_config(mode=mode, num_epochs=1)))
        parts = [
            list(
                ip.BatchPipeline(
                    source,
                    index,
                    small_config(mode=mode, num_epochs=1, process_index=p, process_count=2),
                )
            )
            for p in (0, 1)
        ]
        assert len(parts[0]) == len(parts[1]) == len(whole)
        for w, a, b in zip(whole, *parts, strict=True):
            assert a["audio"].shape == b["audio"].shape == (2, w["audio"].shape[1])
            np.testing.assert_array_equal(np.concatenate([a["audio"], b["audio"]]), w["audio"])
            assert list(a["key"]) + list(b["key"]) == list(w["key"])


def test_batches_by_seconds_have_the_bucket_shapes(data):
    source, index = data
    config = small_config(
        batch_size=None,
        batch_seconds=3.0,
        device_count=4,
        bucket_lengths=(2000, 12000),
        num_epochs=1,
        drop_remainder=False,
    )
    batches = list(ip.BatchPipeline(source, index, config))
    assert sum(int(b["example_mask"].sum()) for b in batches) == len(index.keys)
    assert all(b["audio"].size <= 48000 for b in batches)
    assert {b["audio"].shape for b in batches} == {(24, 2000), (4, 12000)}


def test_targets_errors(data):
    source, index = data
    targets = frame_targets(source)
    del targets["utt005"]
    with pytest.raises(ip.TargetsError, match="no frame targets for utterance 'utt005'"):
        list(ip.BatchPipeline(source, index, small_config(mode="eval"), targets))
    targets = frame_targets(source)
    targets["utt000"] = targets["utt000"][:-3]  # 10282 samples: 31 frames, 28 labels
    with pytest.raises(ip.TargetsError, match="'utt000' have shape"):
        list(ip.BatchPipeline(source, index, small_config(mode="eval"), targets))


def test_loaded_batches_have_the_planned_shapes_and_rows(data):
    source, index = data
    pipe = ip.BatchPipeline(source, index, small_config(num_epochs=1))
    planner = pipe.planner
    plan = planner.plan(0)
    batches = list(pipe)
    assert len(batches) == len(plan)
    for batch, planned in zip(batches, plan, strict=True):
        shape = (planner.batch_sizes[planned.bucket], planner.bucket_lengths[planned.bucket])
        assert batch["audio"].shape == shape
        assert list(batch["key"]) == [index.keys[i] for i in planned.indices]
        real = int(planner.lengths[list(planned.indices)].sum())
        assert int(batch["audio_mask"].sum()) == real


def test_concat_source_reads_parts_in_order(data):
    source, index = data
    whole = ip.ConcatSource([source[:10], source[10:11], source[11:]])
    assert len(whole) == len(source)
    assert [r["key"] for r in whole.__getitems__([60, 0, 10, 11, 9])] == [
        source[i]["key"] for i in (60, 0, 10, 11, 9)
    ]
    assert whole[37]["key"] == source[37]["key"]
    with pytest.raises(IndexError):
        whole[61]
    pipe = ip.BatchPipeline(whole, index, small_config(mode="eval"))
    _same(list(pipe), list(ip.BatchPipeline(source, index, small_config(mode="eval"))))
    assert ip.split_names("train+test_b") == ip.split_names(["train", "test_b"])


END_TO_END = """
import sys, tempfile, json, itertools
from pathlib import Path
import numpy as np
from papt_jax.data import audio, batching, input_pipeline, msp_podcast, prepare, synthetic

tmp = Path(tempfile.mkdtemp())
corpus = synthetic.generate_corpus(tmp / "corpus", preset="smoke", seed=0)
config = msp_podcast.CorpusConfig(corpus_dir=corpus,
                                  new_labels_file="Labels_new/labels_consensus.csv",
                                  test_a_seconds=5.0)
out = prepare.prepare(config, tmp / "data")
counts = {}
for split in ("train", "validation", "test_a", "test_b", "test_c"):
    source, index = input_pipeline.open_split(tmp / "data", split)
    targets = {k: np.zeros(audio.num_frames(n), np.int16) + 3
               for k, n in zip(index.keys, index.num_samples)}
    cfg = batching.PipelineConfig(mode="eval", batch_size=8, device_count=8, num_buckets=3)
    pipe = input_pipeline.BatchPipeline(source, index, cfg, targets)
    keys = [k for b in pipe for k, m in zip(b["key"], b["example_mask"], strict=True) if m]
    assert sorted(keys) == sorted(index.keys), split
    counts[split] = len(keys)
both = input_pipeline.make_pipeline(tmp / "data", ("train", "test_b"), batching.PipelineConfig(
    mode="eval", batch_size=8, device_count=8))
keys = [k for b in both for k, m in zip(b["key"], b["example_mask"]) if m]
assert len(keys) == len(set(keys)) == counts["train"] + counts["test_b"]
speakers = json.loads((out / "speakers.json").read_text())["speakers"]
train = input_pipeline.make_pipeline(tmp / "data", "train", batching.PipelineConfig(
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
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # smoke preset: 10 train, 3 dev, 4 test speakers with 6 utterances each, 3 new speakers.
    assert summary["counts"]["train"] == 60 and summary["counts"]["validation"] == 18
    assert summary["counts"]["test_a"] + summary["counts"]["test_b"] == 24
    assert summary["counts"]["test_c"] > 0
    assert summary["speakers"] == 17
