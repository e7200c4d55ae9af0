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
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from papt_jax import features as features_lib
from papt_jax import kmeans
from papt_jax.models.hubert import HubertModel

log = logging.getLogger(__name__)

LABELS_FILE = "labels.npz"
CENTROIDS_FILE = "centroids.npy"
INFO_FILE = "info.json"

# A feature function maps a padded batch to per-utterance (frames, dim) arrays and
# the frame rate (Hz) those frames come at.
FeatureFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig:
    """k-means options.

    Attributes:
      num_clusters: K.
      fit_fraction: Share of utterances (chosen with the seed) whose frames fit k-means.
      batch_size: Mini-batch size of k-means.
      max_iter: Passes over the fitting frames.
      seed: Seed for utterance choice and k-means.
      centroids_path: Precomputed (K, dim) centroids (.npy); skips fitting.
    """

    num_clusters: int = 500
    fit_fraction: float = 0.1
    batch_size: int = 10_000
    max_iter: int = 100
    seed: int = 0
    centroids_path: str = ""

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
    frames = max((num_samples - 400) // 320 + 1, 0)
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
        )
        centroids = np.asarray(result.centroids)
        fit_info = {
            "fit_frames": int(x.shape[0]),
            "inertia_per_frame": float(result.inertia) / x.shape[0],
            "iterations": int(result.n_iter),
        }
        del x, chunks
    np.save(os.path.join(out_dir, CENTROIDS_FILE), centroids)

    labels: dict[str, np.ndarray] = {}
    centroids_dev = jnp.asarray(centroids)
    for batch in tqdm(batches(), total=total_batches, desc="pseudo-labels: labelling"):
        lengths = batch["audio_mask"].sum(-1)[batch["example_mask"]]
        feats = feature_fn(batch)
        # One device call per batch: every utterance's frames together, split on the host
        # (one call per utterance costs a dispatch and a host sync each).
        assigned = kmeans.predict(centroids_dev, np.concatenate(feats)).astype(np.int16)
        per_utterance = np.split(assigned, np.cumsum([len(f) for f in feats])[:-1])
        for key, frame_labels, n in zip(_keys(batch), per_utterance, lengths, strict=True):
            labels[key] = _to_encoder_rate(frame_labels, rate, int(n))
    np.savez(os.path.join(out_dir, LABELS_FILE), **labels)
    usage = np.bincount(np.concatenate(list(labels.values())), minlength=config.num_clusters)
    info = {
        **fit_info,
        "num_clusters": config.num_clusters,
        "utterances": len(labels),
        "frames": int(usage.sum()),
        "clusters_used": int((usage > 0).sum()),
        "feature_rate_hz": rate,
    }
    with open(os.path.join(out_dir, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)
    log.info("pseudo-labels: %s", info)
    return labels


def load_pseudo_labels(out_dir: str) -> dict[str, np.ndarray]:
    """Reads `labels.npz` written by `compute_pseudo_labels`."""
    path = os.path.join(out_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no pseudo-labels at {path}; run the pseudo_labels stage")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k].astype(np.int32) for k in data.files}
