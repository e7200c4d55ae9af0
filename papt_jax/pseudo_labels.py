"""Frame-level pseudo-labels for masked-prediction pre-training.

Two passes over the audio so memory stays bounded on a full corpus: the first
collects frame features of a `fit_fraction` of the utterances and fits k-means (or
loads precomputed centroids), the second labels every frame of every utterance.
Labels are stored at 50 Hz (encoder frames) in `labels.npz`, keyed by utterance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from papt_jax import features as features_lib
from papt_jax import kmeans
from papt_jax.data import audio as audio_lib
from papt_jax.errors import UserError
from papt_jax.models.hubert import HubertModel

log = logging.getLogger(__name__)

LABELS_FILE = "labels.npz"
CENTROIDS_FILE = "centroids.npy"
INFO_FILE = "info.json"

# A feature function maps a padded batch to per-utterance (frames, dim) arrays and
# the frame rate (Hz) those frames come at.
FeatureFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

# Frames past the end of an utterance's labels (see `features.labels_to_encoder_rate`); the
# loss ignores them. Allowed only as a trailing run.
PAD_LABEL = -1


class PseudoLabelError(UserError, ValueError):
    """A pseudo-label file is missing, unreadable or holds ids that cannot be cluster ids."""


@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig:
    """k-means options (no defaults: the experiment config holds them).

    Attributes:
      num_clusters: K.
      fit_fraction: Share of utterances (chosen with the seed) whose frames fit k-means.
      batch_size: Mini-batch size of k-means.
      max_iter: Passes over the fitting frames.
      n_init: k-means++ initialisations tried, the best kept (fairseq learn_kmeans.py: 20).
      seed: Seed for utterance choice and k-means.
      centroids_path: Precomputed (K, dim) centroids (.npy); skips fitting.
    """

    num_clusters: int
    fit_fraction: float
    batch_size: int
    max_iter: int
    n_init: int
    seed: int
    centroids_path: str

    def __post_init__(self):
        if not 0.0 < self.fit_fraction <= 1.0:
            raise ValueError(f"fit_fraction must be in (0, 1], got {self.fit_fraction}")
        if self.num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {self.num_clusters}")


def mfcc_feature_fn() -> tuple[FeatureFn, int]:
    """39-dim MFCC + deltas at 100 Hz (HuBERT's first iteration)."""

    def fn(batch):
        feats, mask = features_lib.mfcc_features(batch["audio"], batch["audio_mask"])
        return _split_rows(feats, mask, batch["example_mask"])

    return fn, 100


def teacher_feature_fn(model: HubertModel, params, layer: int) -> tuple[FeatureFn, int]:
    """Output of Transformer layer `layer` (1-based, as `hidden_states[layer]`) at 50 Hz."""
    if not 1 <= layer <= model.config.num_hidden_layers:
        raise ValueError(
            f"teacher layer must be in 1..{model.config.num_hidden_layers}, got {layer}"
        )
    if model.config.speaker_fusion != "none":
        raise ValueError("the pseudo-label teacher must not use speaker embeddings")

    @jax.jit
    def forward(params, audio, audio_mask):
        out = model.apply(
            {"params": params}, audio, audio_mask=audio_mask, output_hidden_states=True
        )
        return out.hidden_states[layer], out.frame_mask

    def fn(batch):
        feats, mask = forward(params, batch["audio"], batch["audio_mask"])
        return _split_rows(feats, mask, batch["example_mask"])

    return fn, 50


def _split_rows(feats: jax.Array, mask: jax.Array, example_mask: np.ndarray) -> list[np.ndarray]:
    feats, mask = jax.device_get((feats, mask))
    return [
        np.asarray(f[m], np.float32)
        for f, m, real in zip(feats, mask, example_mask, strict=True)
        if real
    ]


def _keys(batch) -> list[str]:
    return [
        k.decode() if isinstance(k, bytes) else str(k)
        for k, real in zip(batch["key"], batch["example_mask"], strict=True)
        if real
    ]


def chosen_for_fit(key: str, fraction: float, seed: int) -> bool:
    """Deterministic, order-independent choice of fitting utterances."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8]
    return int.from_bytes(digest, "little") / 2.0**64 < fraction


def _to_encoder_rate(labels: np.ndarray, rate: int, num_samples: int) -> np.ndarray:
    frames = int(audio_lib.num_frames(num_samples))
    if rate == 100:
        return features_lib.labels_to_encoder_rate(labels, frames)
    return labels[:frames]


def compute_pseudo_labels(
    batches: Callable[[], Iterable[dict[str, np.ndarray]]],
    feature_fn: FeatureFn,
    rate: int,
    config: PseudoLabelConfig,
    out_dir: str,
    total_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """Fits (or loads) k-means and writes 50 Hz labels for every utterance.

    Args:
      batches: Returns a fresh pass over evaluation batches (every utterance once,
        uncropped, `example_mask` marking real rows); called twice.
      feature_fn: From `mfcc_feature_fn` or `teacher_feature_fn`.
      rate: Frame rate of `feature_fn` (100 or 50 Hz).
      config: k-means options.
      out_dir: Receives labels.npz, centroids.npy and info.json.
      total_batches: For the progress bar.

    Returns:
      Utterance key -> (frames,) int16 labels at 50 Hz.
    """
    os.makedirs(out_dir, exist_ok=True)
    if config.centroids_path:
        centroids = kmeans.load_centroids(config.centroids_path, k=config.num_clusters)
        fit_info = {"centroids_from": config.centroids_path}
    else:
        chunks = []
        for batch in tqdm(batches(), total=total_batches, desc="pseudo-labels: features"):
            keep = [chosen_for_fit(k, config.fit_fraction, config.seed) for k in _keys(batch)]
            if any(keep):
                chunks.extend(f for f, k in zip(feature_fn(batch), keep, strict=True) if k)
        if not chunks:
            raise ValueError("no utterance was chosen to fit k-means; raise fit_fraction")
        x = np.concatenate(chunks)
        if x.shape[0] < config.num_clusters:
            raise ValueError(
                f"only {x.shape[0]} frames to fit {config.num_clusters} clusters; "
                "raise fit_fraction or lower num_clusters"
            )
        log.info("fitting k-means: %d frames x %d dims, K=%d", *x.shape, config.num_clusters)
        result = kmeans.fit_minibatch_kmeans(
            jax.random.PRNGKey(config.seed),
            x,
            config.num_clusters,
            batch_size=min(config.batch_size, x.shape[0]),
            max_iter=config.max_iter,
            n_init=config.n_init,
        )
        centroids = np.asarray(result.centroids)
        fit_info = {
            "fit_frames": int(x.shape[0]),
            "n_init": config.n_init,
            "chosen_init": int(result.chosen_init),
            "inertia_per_frame": float(result.inertia) / x.shape[0],
            "iterations": int(result.n_iter),
        }
        del x, chunks
    _write_atomic(os.path.join(out_dir, CENTROIDS_FILE), lambda f: np.save(f, centroids))

    labels: dict[str, np.ndarray] = {}
    # int16 holds K <= 32767 (the paper's 500); a larger K needs int32 to not wrap around.
    label_dtype = np.int16 if centroids.shape[0] <= np.iinfo(np.int16).max else np.int32
    centroids_dev = jnp.asarray(centroids)
    for batch in tqdm(batches(), total=total_batches, desc="pseudo-labels: labelling"):
        lengths = batch["audio_mask"].sum(-1)[batch["example_mask"]]
        feats = feature_fn(batch)
        # One device call per batch: every utterance's frames together, split on the host
        # (one call per utterance costs a dispatch and a host sync each).
        assigned = kmeans.predict(centroids_dev, np.concatenate(feats)).astype(label_dtype)
        per_utterance = np.split(assigned, np.cumsum([len(f) for f in feats])[:-1])
        for key, frame_labels, n in zip(_keys(batch), per_utterance, lengths, strict=True):
            labels[key] = _to_encoder_rate(frame_labels, rate, int(n))
    _write_atomic(os.path.join(out_dir, LABELS_FILE), lambda f: np.savez(f, **labels))
    usage = np.bincount(np.concatenate(list(labels.values())), minlength=config.num_clusters)
    info = {
        **fit_info,
        "num_clusters": config.num_clusters,
        "utterances": len(labels),
        "frames": int(usage.sum()),
        "clusters_used": int((usage > 0).sum()),
        "feature_rate_hz": rate,
    }
    _write_atomic(
        os.path.join(out_dir, INFO_FILE), lambda f: f.write(json.dumps(info, indent=1).encode())
    )
    log.info("pseudo-labels: %s", info)
    return labels


def _write_atomic(path: str, write: Callable) -> None:
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


def _num_clusters(out_dir: str) -> int:
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
    num_clusters = _num_clusters(out_dir)
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
