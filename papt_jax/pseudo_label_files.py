"""The files of the pseudo-label stage: their names, atomic writing, and checked loading.

`compute_pseudo_labels` (in `pseudo_labels.py`) writes three files into one folder:
`labels.npz` (utterance key -> (frames,) int ids at 50 Hz), `centroids.npy` (K, dim) and
`info.json` (how they were made). Loading checks every id against K, so labels and
centroids from different runs, or a damaged file, are named instead of training on them.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable

import numpy as np

from papt_jax.errors import UserError

LABELS_FILE = "labels.npz"
CENTROIDS_FILE = "centroids.npy"
INFO_FILE = "info.json"

# Frames past the end of an utterance's labels (see `features.labels_to_encoder_rate`); the
# loss ignores them. Allowed only as a trailing run.
PAD_LABEL = -1


class PseudoLabelError(UserError, ValueError):
    """A pseudo-label file is missing, unreadable or holds ids that cannot be cluster ids."""


def write_atomic(path: str, write: Callable) -> None:
    """Writes a file through `write(binary file)` under a temporary name, then renames it.

    A kill leaves the old file (or none) under `path` and at most a `.tmp` file beside it,
    never a half-written file under the final name.
    """
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def num_clusters_of(out_dir: str) -> int:
    path = os.path.join(out_dir, CENTROIDS_FILE)
    if not os.path.isfile(path):
        raise PseudoLabelError(
            f"no k-means centroids at {path}; the pseudo-label ids cannot be checked",
            hint="rerun the pseudo_labels stage",
        )
    try:
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError, EOFError) as e:
        raise PseudoLabelError(
            f"cannot read the k-means centroids {path}: {e}", hint="rerun the pseudo_labels stage"
        ) from e
    if len(shape) != 2 or shape[0] < 2:
        raise PseudoLabelError(f"{path} has shape {shape}; expected (num_clusters >= 2, dim)")
    return int(shape[0])


def check_labels(key: str, labels: np.ndarray, num_clusters: int, path: str) -> np.ndarray:
    """One utterance's labels as int32, after checking every id is usable.

    Args:
      key: Utterance key (for messages).
      labels: (frames,) integer ids.
      num_clusters: K; ids must be in [0, K).
      path: The file the labels came from (for messages).

    Returns:
      (frames,) int32.

    Raises:
      PseudoLabelError: naming the file, the key and the offending value, for a non-integer
        or non-1-D array, an id outside [0, K), or -1 padding anywhere but a trailing run.
    """
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise PseudoLabelError(
            f"{path}: labels of {key!r} are {labels.dtype} with shape {labels.shape}; "
            "expected one integer id per frame"
        )
    labels = labels.astype(np.int32)
    real = labels != PAD_LABEL
    bad = real & ((labels < 0) | (labels >= num_clusters))
    if bad.any():
        i = int(np.argmax(bad))
        raise PseudoLabelError(
            f"{path}: utterance {key!r} has label {int(labels[i])} at frame {i}, outside the "
            f"{num_clusters} clusters [0, {num_clusters}) of its centroids",
            hint="the labels and centroids come from different runs; rerun the pseudo_labels stage",
        )
    n_real = int(real.sum())
    if n_real and not real[:n_real].all():
        i = int(np.argmin(real))
        raise PseudoLabelError(
            f"{path}: utterance {key!r} has padding label {PAD_LABEL} at frame {i}, before "
            "labelled frames; padding may only end an utterance",
            hint="rerun the pseudo_labels stage",
        )
    return labels


def load_pseudo_labels(out_dir: str) -> dict[str, np.ndarray]:
    """Reads and checks `labels.npz` written by `compute_pseudo_labels`.

    Every id is checked against the number of clusters in `centroids.npy` beside it.

    Returns:
      Utterance key -> (frames,) int32 labels at 50 Hz.

    Raises:
      PseudoLabelError: for a missing, truncated or corrupted file (naming it) or a bad id.
    """
    path = os.path.join(out_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise PseudoLabelError(
            f"no pseudo-labels at {path}", hint="run the pseudo_labels stage first"
        )
    num_clusters = num_clusters_of(out_dir)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: check_labels(k, data[k], num_clusters, path) for k in data.files}
    except PseudoLabelError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise PseudoLabelError(
            f"the pseudo-label file {path} is truncated or corrupted ({type(e).__name__}: {e})",
            hint=f"delete {path} and rerun the pseudo_labels stage",
        ) from e
