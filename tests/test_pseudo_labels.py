"""Pseudo-label files: every id checked on load, clear errors for damaged files, atomic writes;
the batched stage gives the labels of one utterance at a time."""

import json
import os
import zipfile

import jax
import numpy as np
import pytest

from papt_jax import kmeans, pseudo_label_files, pseudo_labels
from papt_jax.data import audio as audio_lib
from papt_jax.errors import UserError
from papt_jax.pseudo_label_files import PseudoLabelError, load_pseudo_labels

K = 4


def write_labels(folder, labels, k=K):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / pseudo_label_files.CENTROIDS_FILE, np.zeros((k, 3), np.float32))
    np.savez(folder / pseudo_label_files.LABELS_FILE, **labels)


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
    assert "utt7" in str(info.value) and pseudo_label_files.LABELS_FILE in str(info.value)
    assert isinstance(info.value, UserError)


def test_truncated_labels_file_names_the_file(tmp_path):
    labels = {f"u{i}": np.arange(200, dtype=np.int16) % K for i in range(20)}
    write_labels(tmp_path, labels)
    path = tmp_path / pseudo_label_files.LABELS_FILE
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
    path = tmp_path / pseudo_label_files.LABELS_FILE
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(PseudoLabelError, match=str(path)):
        load_pseudo_labels(str(tmp_path))


def test_missing_files_are_user_errors(tmp_path):
    with pytest.raises(PseudoLabelError, match="no pseudo-labels at"):
        load_pseudo_labels(str(tmp_path))
    np.savez(tmp_path / pseudo_label_files.LABELS_FILE, a=np.zeros(3, np.int16))
    with pytest.raises(PseudoLabelError, match="no k-means centroids"):
        load_pseudo_labels(str(tmp_path))


@pytest.mark.slow
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
    assert not (tmp_path / pseudo_label_files.LABELS_FILE).exists()
    monkeypatch.undo()
    labels = pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches), feature_fn, rate, config, str(tmp_path)
    )
    loaded = load_pseudo_labels(str(tmp_path))
    assert sorted(loaded) == ["u0", "u1"]
    for key in labels:
        np.testing.assert_array_equal(loaded[key], labels[key])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# --- the batched stage: same labels as one utterance at a time ------------------------

# Two bucket shapes (400 + 320 k): [u0, u1], [u2, padding] and [u3, u4], batch size 2.
LENGTHS = [6000, 9000, 3000, 12000, 11000]  # samples
BUCKETS = (9040, 12240)


def teacher_batches(batch_size=2):
    """Pipeline-like eval batches: per bucket, rows sorted by key, last batch padded."""
    rs = np.random.RandomState(1)
    utterances = {f"u{i}": (0.1 * rs.randn(n)).astype(np.float32) for i, n in enumerate(LENGTHS)}
    batches = []
    for bucket in BUCKETS:
        lower = max([b for b in BUCKETS if b < bucket], default=0)
        keys = sorted(k for k, a in utterances.items() if lower < len(a) <= bucket)
        for start in range(0, len(keys), batch_size):
            batch = {
                "audio": np.zeros((batch_size, bucket), np.float32),
                "audio_mask": np.zeros((batch_size, bucket), bool),
                "example_mask": np.zeros(batch_size, bool),
                "key": np.full(batch_size, "", dtype=object),
            }
            for row, key in enumerate(keys[start : start + batch_size]):
                n = len(utterances[key])
                batch["audio"][row, :n], batch["audio_mask"][row, :n] = utterances[key], True
                batch["example_mask"][row], batch["key"][row] = True, key
            batches.append(batch)
    return utterances, batches


class TinyTeacher(pseudo_labels.FeatureFn):
    """Layer 1 of a tiny random HuBERT; records its traces and its fit-pass batches."""

    def __init__(self):
        from papt_jax.models import HubertModel, get_preset

        model = HubertModel(get_preset("tiny"))
        params = model.init(jax.random.PRNGKey(0), np.zeros((1, 4000), np.float32))["params"]
        self.traced_shapes, self.fit_keys = [], []

        def frames(params, audio, audio_mask):
            self.traced_shapes.append(audio.shape)  # runs once per trace, not per call
            out = model.apply(
                {"params": params}, audio, audio_mask=audio_mask, output_hidden_states=True
            )
            return out.hidden_states[1], out.frame_mask

        super().__init__(frames, params, 50)

    def features(self, batch):
        self.fit_keys.append(list(batch["key"][batch["example_mask"]]))
        return super().features(batch)


@pytest.fixture(scope="module")
def features_alone():
    """Key -> teacher features of that utterance alone (a batch of one, no padding)."""
    utterances, _ = teacher_batches()
    teacher = TinyTeacher()
    return {
        key: teacher(
            {
                "audio": audio[None],
                "audio_mask": np.ones((1, len(audio)), bool),
                "example_mask": np.ones(1, bool),
                "key": np.array([key], dtype=object),
            }
        )[0]
        for key, audio in utterances.items()
    }


def kmeans_config(**changes):
    values = dict(
        num_clusters=5,
        fit_fraction=1.0,
        batch_size=10_000,
        max_iter=5,
        n_init=2,
        seed=0,
        centroids_path="",
    )
    return pseudo_labels.PseudoLabelConfig(**{**values, **changes})


@pytest.mark.slow
def test_bucketed_labels_equal_one_utterance_at_a_time_and_compile_once_per_shape(
    tmp_path, features_alone
):
    utterances, batches = teacher_batches()
    teacher = TinyTeacher()
    centroids = np.random.RandomState(2).randn(5, 32).astype(np.float32)
    np.save(tmp_path / "given.npy", centroids)
    config = kmeans_config(centroids_path=str(tmp_path / "given.npy"))
    labels = pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches), teacher, 50, config, str(tmp_path / "out")
    )
    # Features and nearest centroids in one jitted function, traced once per bucket shape.
    assert sorted(teacher.traced_shapes) == [(2, b) for b in BUCKETS]
    assert sorted(labels) == sorted(utterances)
    for key, audio in utterances.items():
        expected = kmeans.predict(centroids, features_alone[key])
        assert labels[key].dtype == np.int16
        assert len(labels[key]) == audio_lib.num_frames(len(audio)) == len(expected)
        np.testing.assert_array_equal(labels[key], expected, err_msg=key)
    assert len(set(np.concatenate(list(labels.values())).tolist())) > 1  # ids do vary


@pytest.mark.slow
def test_fit_runs_the_teacher_on_chosen_utterances_only_in_pass_order(tmp_path, features_alone):
    utterances, batches = teacher_batches()
    config = kmeans_config(fit_fraction=0.5, seed=14)
    in_pass_order = [k for b in batches for k in b["key"][b["example_mask"]]]
    chosen = [k for k in in_pass_order if pseudo_labels.chosen_for_fit(k, 0.5, 14)]
    # u2 (alone in its batch) waits for a partner while [u3, u4] go first: the teacher
    # sees them out of pass order.
    assert chosen == ["u2", "u3", "u4"]
    teacher = TinyTeacher()
    labels = pseudo_labels.compute_pseudo_labels(
        lambda: iter(batches), teacher, 50, config, str(tmp_path)
    )
    # Only chosen rows reach the teacher, regrouped into batches of the input shapes.
    assert teacher.fit_keys == [["u3", "u4"], ["u2"]]
    assert sorted(teacher.traced_shapes) == sorted([(2, b) for b in BUCKETS] * 2)  # fit, label
    # k-means saw the chosen utterances' features in pass order, as computed one at a time.
    x = np.concatenate([features_alone[k] for k in chosen])
    fitted = kmeans.fit_minibatch_kmeans(
        jax.random.PRNGKey(14), x, 5, batch_size=x.shape[0], max_iter=5, n_init=2
    )
    np.testing.assert_allclose(
        np.load(tmp_path / pseudo_label_files.CENTROIDS_FILE),
        fitted.centroids,
        rtol=1e-5,
        atol=1e-6,
    )
    info = json.loads((tmp_path / pseudo_label_files.INFO_FILE).read_text())
    assert info["fit_frames"] == x.shape[0]
    assert info["utterances"] == len(utterances) == len(labels)
