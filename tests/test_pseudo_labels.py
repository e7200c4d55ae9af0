"""Pseudo-label files: every id checked on load, clear errors for damaged files, atomic writes."""

import os
import zipfile

import numpy as np
import pytest

from papt_jax import pseudo_labels
from papt_jax.errors import UserError
from papt_jax.pseudo_labels import PseudoLabelError, load_pseudo_labels

K = 4


def write_labels(folder, labels, k=K):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / pseudo_labels.CENTROIDS_FILE, np.zeros((k, 3), np.float32))
    np.savez(folder / pseudo_labels.LABELS_FILE, **labels)


def test_good_labels_load_as_int32(tmp_path):
    write_labels(tmp_path, {"a": np.array([0, 3, 1], np.int16), "b": np.array([2, -1, -1])})
    loaded = load_pseudo_labels(str(tmp_path))
    assert loaded["a"].dtype == np.int32
    np.testing.assert_array_equal(loaded["b"], [2, -1, -1])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([0, 4, 1], np.int16), r"label 4 at frame 1, outside the 4 clusters"),
        (np.array([0, -7, 1], np.int16), r"label -7 at frame 1"),
        (np.array([0, -1, 1], np.int16), r"padding label -1 at frame 1, before labelled"),
        (np.array([0.0, 1.0]), r"float64"),
        (np.zeros((2, 2), np.int16), r"shape \(2, 2\)"),
    ],
)
def test_out_of_range_or_misplaced_ids_name_the_file_key_and_value(tmp_path, bad, match):
    # Before: such ids reached the loss and tripped the NaN guard, which blamed the
    # learning rate.
    write_labels(tmp_path, {"good": np.array([0, 1, 2], np.int16), "utt7": bad})
    with pytest.raises(PseudoLabelError, match=match) as info:
        load_pseudo_labels(str(tmp_path))
    assert "utt7" in str(info.value) and pseudo_labels.LABELS_FILE in str(info.value)
    assert isinstance(info.value, UserError)


def test_truncated_labels_file_names_the_file(tmp_path):
    labels = {f"u{i}": np.arange(200, dtype=np.int16) % K for i in range(20)}
    write_labels(tmp_path, labels)
    path = tmp_path / pseudo_labels.LABELS_FILE
    data = path.read_bytes()
    # What a kill during np.savez to the final name left behind.
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(zipfile.BadZipFile):  # the fault: no path in numpy's own error
        np.load(path)
    with pytest.raises(PseudoLabelError, match="truncated or corrupted") as info:
        load_pseudo_labels(str(tmp_path))
    assert str(path) in str(info.value)


def test_corrupted_bytes_inside_the_labels_file_name_the_file(tmp_path):
    write_labels(tmp_path, {"u0": np.arange(5000, dtype=np.int16) % K})
    path = tmp_path / pseudo_labels.LABELS_FILE
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(PseudoLabelError, match=str(path)):
        load_pseudo_labels(str(tmp_path))


def test_missing_files_are_user_errors(tmp_path):
    with pytest.raises(PseudoLabelError, match="no pseudo-labels at"):
        load_pseudo_labels(str(tmp_path))
    np.savez(tmp_path / pseudo_labels.LABELS_FILE, a=np.zeros(3, np.int16))
    with pytest.raises(PseudoLabelError, match="no k-means centroids"):
        load_pseudo_labels(str(tmp_path))


def test_labels_are_written_under_a_temporary_name_then_renamed(tmp_path, monkeypatch):
    """A kill while np.savez writes leaves no file under the final name."""
    rs = np.random.RandomState(0)
    batches = [
        {
            "audio": rs.randn(2, 4000).astype(np.float32),
            "audio_mask": np.ones((2, 4000), bool),
            "example_mask": np.ones(2, bool),
            "key": np.array(["u0", "u1"], dtype=object),
        }
    ]
    feature_fn, rate = pseudo_labels.mfcc_feature_fn()
    config = pseudo_labels.PseudoLabelConfig(
        num_clusters=2,
        fit_fraction=1.0,
        batch_size=10_000,
        max_iter=2,
        n_init=20,
        seed=0,
        centroids_path="",
    )

    def killed_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(np, "savez", killed_savez)
    with pytest.raises(KeyboardInterrupt):
        pseudo_labels.compute_pseudo_labels(
            lambda: iter(batches), feature_fn, rate, config, str(tmp_path)
        )
    assert not (tmp_path / pseudo_labels.LABELS_FILE).exists()
    monkeypatch.undo()
    labels = pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches), feature_fn, rate, config, str(tmp_path)
    )
    loaded = load_pseudo_labels(str(tmp_path))
    assert sorted(loaded) == ["u0", "u1"]
    for key in labels:
        np.testing.assert_array_equal(loaded[key], labels[key])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
