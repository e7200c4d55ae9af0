"""Unseen-speaker proxies and the pseudo-label computation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from papt_jax import kmeans, pseudo_label_files, pseudo_labels
from papt_jax.eval import evaluate


def test_proxy_is_the_most_similar_training_speaker():
    rs = np.random.RandomState(0)
    directions = np.eye(4)[:, :]  # four training speakers, orthogonal directions
    train_index = np.repeat([7, 3, 11, 5], 5)  # global speaker indices, not 0..3
    train_vecs = directions[np.repeat(np.arange(4), 5)] + 0.05 * rs.randn(20, 4)
    # Unseen speaker "a" points like training speaker 11, "b" like speaker 7.
    test_ids = np.asarray(["a"] * 3 + ["b"] * 4)
    test_vecs = np.concatenate(
        [
            directions[2] + 0.05 * rs.randn(3, 4),
            2.0 * directions[0] + 0.05 * rs.randn(4, 4),  # scale must not matter (cosine)
        ]
    )
    proxies = evaluate.proxy_speakers(train_vecs, train_index, test_vecs, test_ids)
    assert proxies == {"a": 11, "b": 7}


def test_with_speakers_replaces_real_rows_only():
    batch = {
        "key": np.asarray(["u1", "u2", ""], dtype=object),
        "example_mask": np.asarray([True, True, False]),
        "speaker": np.full(3, -1, np.int32),
    }
    (out,) = list(evaluate.with_speakers([batch], {"u1": 4, "u2": 9}))
    np.testing.assert_array_equal(out["speaker"], [4, 9, -1])
    np.testing.assert_array_equal(batch["speaker"], [-1, -1, -1])  # input untouched


def test_unseen_proxies_name_both_speakers_by_id_in_reading_order():
    passes = {
        "train": {
            "speaker": np.asarray([7, 3, 7, 11]),
            "speaker_id": np.asarray([70, 30, 70, 110]),
        },
        "test_c": {
            "speaker": np.asarray([11, 7, 11, 3]),  # each row's proxy index
            "speaker_id": np.asarray([10, 2, 10, 9]),
        },
    }
    shown = evaluate.unseen_proxies(passes)
    assert shown == {"2": "70", "9": "30", "10": "110"}
    assert list(shown) == ["2", "9", "10"]  # numerically, not "10" before "2"


@pytest.mark.slow
def test_mfcc_pseudo_labels_cover_every_encoder_frame(tmp_path):
    rs = np.random.RandomState(0)
    lengths = [8000, 6000, 12000, 4000, 9000, 7000]
    batches = []
    for i in range(0, len(lengths), 2):
        pair = lengths[i : i + 2]
        audio = np.zeros((2, 12000), np.float32)
        mask = np.zeros((2, 12000), bool)
        for row, n in enumerate(pair):
            audio[row, :n] = rs.randn(n) * (0.1 + row)
            mask[row, :n] = True
        batches.append(
            {
                "audio": audio,
                "audio_mask": mask,
                "example_mask": np.ones(2, bool),
                "key": np.asarray([f"u{i}", f"u{i + 1}"], dtype=object),
            }
        )
    feature_fn, rate = pseudo_labels.mfcc_feature_fn()
    config = pseudo_labels.PseudoLabelConfig(
        num_clusters=8,
        fit_fraction=1.0,
        batch_size=256,
        max_iter=100,
        n_init=20,
        seed=0,
        centroids_path="",
    )
    labels = pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches), feature_fn, rate, config, str(tmp_path)
    )
    assert sorted(labels) == [f"u{i}" for i in range(6)]
    for i, n in enumerate(lengths):
        got = labels[f"u{i}"]
        assert got.shape == ((n - 400) // 320 + 1,)
        assert got.min() >= 0 and got.max() < 8
    loaded = pseudo_label_files.load_pseudo_labels(str(tmp_path))
    for key, value in labels.items():
        np.testing.assert_array_equal(loaded[key], value)
    centroids = np.load(tmp_path / "centroids.npy")
    assert centroids.shape == (8, 39)
    # Labelling a whole batch in one call equals labelling each utterance on its own.
    for batch in batches:
        lengths_b = batch["audio_mask"].sum(-1)
        for key, feats, n in zip(batch["key"], feature_fn(batch), lengths_b, strict=True):
            alone = kmeans.predict(centroids, feats)
            expected = pseudo_labels._to_encoder_rate(alone, rate, int(n))
            np.testing.assert_array_equal(labels[key], expected)
    # Precomputed centroids are used as given.
    fixed = pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches),
        feature_fn,
        rate,
        dataclasses.replace(config, centroids_path=str(tmp_path / "centroids.npy")),
        str(tmp_path / "again"),
    )
    for key, value in labels.items():
        np.testing.assert_array_equal(fixed[key], value)


def test_fit_fraction_choice_is_deterministic_and_close_to_the_fraction():
    keys = [f"utt{i}" for i in range(4000)]
    chosen = [pseudo_labels.chosen_for_fit(k, 0.1, seed=3) for k in keys]
    assert chosen == [pseudo_labels.chosen_for_fit(k, 0.1, seed=3) for k in keys]
    assert 0.08 < np.mean(chosen) < 0.12
