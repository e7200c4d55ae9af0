"""Frame-level pseudo-labels for masked-prediction pre-training.

Two passes over the audio so memory stays bounded on a full corpus: the first
collects frame features of a `fit_fraction` of the utterances and fits k-means (or
loads precomputed centroids), the second labels every frame of every utterance.
Labels are stored at 50 Hz (encoder frames) in `labels.npz`, keyed by utterance
(`pseudo_label_files.py` owns the files and reads them back, checked).

Both passes run on the evaluation pipeline's batches, whose shapes come from a few
length buckets, and every device computation is jitted, so each bucket shape compiles
once per pass. The labelling pass computes a batch's features and their nearest
centroids in one jitted function (features never leave the device), and reads each
batch's results only after the next batch is dispatched, so the device is not idle
while the host reads audio. The fit pass runs the teacher on the chosen utterances
only, regrouped into full batches of their bucket's shape. Both progress bars show the
audio done and the rate in audio-hours per hour of wall time (= times real time).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax import features as features_lib
from papt_jax import kmeans, progress
from papt_jax.data import audio as audio_lib
from papt_jax.models.hubert import HubertModel
from papt_jax.models.stack import first_layers
from papt_jax.pseudo_label_files import (
    CENTROIDS_FILE,
    INFO_FILE,
    LABELS_FILE,
    PAD_LABEL,
    write_atomic,
)

log = logging.getLogger(__name__)

# The traceable core of a feature function: (params, audio (B, T), audio_mask (B, T)) ->
# (features (B, F, D), frame_mask (B, F), True on each row's leading valid frames).
FramesFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


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


def _features_f32(frames: FramesFn, params, audio, audio_mask):
    feats, mask = frames(params, audio, audio_mask)
    return feats.astype(jnp.float32), mask


def _nearest_centroids(frames: FramesFn, params, centroids, audio, audio_mask):
    """(B, F) int32 nearest-centroid ids (PAD_LABEL on padded frames), (B,) valid frames."""
    feats, mask = _features_f32(frames, params, audio, audio_mask)
    batch, num_frames, dim = feats.shape
    # The very function `kmeans.predict` runs on each chunk, so the labels are those of
    # predicting on the fetched features. Padded frames are assigned too (cheaper than
    # gathering the valid ones into a new shape) and then overwritten.
    ids, _ = kmeans._assign_chunk(centroids, feats.reshape(batch * num_frames, dim))
    ids = ids.reshape(batch, num_frames)
    return jnp.where(mask, ids, PAD_LABEL), mask.sum(-1, dtype=jnp.int32)


class FeatureFn:
    """Frame features of padded batches for both passes of the stage.

    Holds two jitted functions of the batch, each compiled once per batch shape:
    `features` (the fit pass) and `labels` (features and nearest centroids in one
    computation). Both return device arrays without waiting for them, so the caller
    chooses when to synchronise. Calling the object on a batch gives every real row's
    features on the host.

    Args:
      frames: Traceable (params, audio, audio_mask) -> (features, frame_mask).
      params: Passed to `frames` as a jit argument, so a teacher's weights are not baked
        into the compiled code as constants; None for MFCC.
      rate: Frame rate of the features in Hz (100 for MFCC, 50 for a teacher).

    Attributes:
      rate: As given.
    """

    def __init__(self, frames: FramesFn, params, rate: int):
        self.rate = rate
        self._params = params
        self._features = jax.jit(functools.partial(_features_f32, frames))
        self._labels = jax.jit(functools.partial(_nearest_centroids, frames))

    def features(self, batch: dict[str, np.ndarray]) -> tuple[jax.Array, jax.Array]:
        """(B, F, D) float32 features and (B, F) frame mask, still on the device."""
        return self._features(self._params, batch["audio"], batch["audio_mask"])

    def labels(self, batch: dict[str, np.ndarray], centroids: jax.Array):
        """Nearest of `centroids` (K, D) for every frame, still on the device.

        Returns:
          (B, F) int32 cluster ids (PAD_LABEL on padded frames) and (B,) int32 valid
          frames per row.
        """
        return self._labels(self._params, centroids, batch["audio"], batch["audio_mask"])

    def __call__(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every real row's (frames, D) float32 features, as NumPy arrays."""
        return _split_rows(*jax.device_get(self.features(batch)), batch["example_mask"])


def mfcc_feature_fn() -> tuple[FeatureFn, int]:
    """39-dim MFCC + deltas at 100 Hz (HuBERT's first iteration)."""
    fn = FeatureFn(lambda _, audio, mask: features_lib.mfcc_features(audio, mask), None, 100)
    return fn, fn.rate


def teacher_feature_fn(model: HubertModel, params, layer: int) -> tuple[FeatureFn, int]:
    """Output of Transformer layer `layer` (1-based, as `hidden_states[layer]`) at 50 Hz.

    Layers past `layer` are not computed: the teacher is cut after `layer` layers
    (`models.stack.first_layers`), which a scanned stack needs (XLA does not remove loop
    iterations whose results go unused).
    """
    if not 1 <= layer <= model.config.num_hidden_layers:
        raise ValueError(
            f"teacher layer must be in 1..{model.config.num_hidden_layers}, got {layer}"
        )
    if model.config.speaker_fusion != "none":
        raise ValueError("the pseudo-label teacher must not use speaker embeddings")
    config, params = first_layers(model.config, params, layer)
    model = HubertModel(config)

    def frames(params, audio, audio_mask):
        out = model.apply(
            {"params": params}, audio, audio_mask=audio_mask, output_hidden_states=True
        )
        # The cut encoder's last hidden state: layer `layer`'s output (before a pre-LN
        # model's final LayerNorm, as `hidden_states[layer]` of the whole encoder).
        return out.hidden_states[-1], out.frame_mask

    fn = FeatureFn(frames, params, 50)
    return fn, fn.rate


def _split_rows(feats: np.ndarray, mask: np.ndarray, example_mask: np.ndarray) -> list[np.ndarray]:
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


class _AudioRate:
    """Audio done in a pass and its rate, shown after a progress bar's own counts."""

    def __init__(self, bar):
        self.bar = bar
        self.seconds = 0.0
        self.start = time.perf_counter()

    def add(self, num_samples: int) -> None:
        self.seconds += num_samples / audio_lib.SAMPLE_RATE
        # refresh=False: the bar redraws at its own pace, not once per batch.
        self.bar.set_postfix_str(self.describe(), refresh=False)

    def per_hour(self) -> float:
        """Audio-hours per hour of wall time since the pass began (= times real time)."""
        return self.seconds / max(time.perf_counter() - self.start, 1e-9)

    def describe(self) -> str:
        return f"{self.seconds / 3600:.2f} audio-h, {self.per_hour():.1f} audio-h/h"


def _fetch_behind(dispatched: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """(context, results fetched to the host) for each (context, device results) item.

    Each item's results are fetched only after the next item was drawn, which reads and
    dispatches the next batch: the device computes one batch while the host waits for
    the one before, instead of idling while the host reads audio after every sync.
    """
    pending = None
    for item in dispatched:
        if pending is not None:
            yield pending[0], jax.device_get(pending[1])
        pending = item
    if pending is not None:
        yield pending[0], jax.device_get(pending[1])


def _fit_batches(
    batches: Iterable[dict[str, np.ndarray]], chosen: Callable[[str], bool], bar
) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Batches of only the utterances chosen to fit k-means, in the input batches' shapes.

    A batch holding one chosen utterance would cost the teacher a whole batch; moving the
    chosen rows into full batches of their bucket's shape runs it on about `fit_fraction`
    of the audio and compiles no new shape.

    Yields:
      (each real row's position among all utterances of the pass, batch with `audio`,
      `audio_mask`, `example_mask` and `key`); the positions put the features back into
      pass order, so k-means sees the same rows in the same order as without regrouping.
    """
    waiting: dict[tuple[int, ...], list] = {}
    position = 0
    for batch in batches:
        shape = batch["audio"].shape
        for row, (key, real) in enumerate(zip(batch["key"], batch["example_mask"], strict=True)):
            if not real:
                continue
            key = key.decode() if isinstance(key, bytes) else str(key)
            if chosen(key):
                entry = (position, batch["audio"][row].copy(), batch["audio_mask"][row].copy(), key)
                waiting.setdefault(shape, []).append(entry)
            position += 1
        bar.update()
        rows = waiting.get(shape, [])
        while len(rows) >= shape[0]:
            yield _packed(shape, rows[: shape[0]])
            rows = waiting[shape] = rows[shape[0] :]
    for shape, rows in waiting.items():
        if rows:
            yield _packed(shape, rows)


def _packed(shape: tuple[int, ...], rows: list) -> tuple[list[int], dict[str, np.ndarray]]:
    batch = {
        "audio": np.zeros(shape, np.float32),
        "audio_mask": np.zeros(shape, bool),
        "example_mask": np.zeros(shape[:1], bool),
        "key": np.full(shape[:1], "", dtype=object),
    }
    for row, (_, audio, mask, key) in enumerate(rows):
        batch["audio"][row], batch["audio_mask"][row] = audio, mask
        batch["example_mask"][row], batch["key"][row] = True, key
    return [position for position, *_ in rows], batch


def _fit_features(
    batches: Iterable[dict[str, np.ndarray]],
    feature_fn: FeatureFn,
    config: PseudoLabelConfig,
    total_batches: int | None,
    name: str,
) -> np.ndarray:
    """(frames, D) float32 features of the chosen utterances, in pass order."""
    chosen = functools.partial(chosen_for_fit, fraction=config.fit_fraction, seed=config.seed)
    by_position: dict[int, np.ndarray] = {}
    with progress.bar(total=total_batches, desc=f"{name}: features to fit", unit="batches") as bar:
        rate = _AudioRate(bar)
        dispatched = (
            ((positions, batch), feature_fn.features(batch))
            for positions, batch in _fit_batches(batches, chosen, bar)
        )
        for (positions, batch), (feats, mask) in _fetch_behind(dispatched):
            rows = _split_rows(feats, mask, batch["example_mask"])
            by_position.update(zip(positions, rows, strict=True))
            rate.add(int(batch["audio_mask"].sum()))
    log.info("%s: features to fit k-means from %s", name, rate.describe())
    if not by_position:
        raise ValueError("no utterance was chosen to fit k-means; raise fit_fraction")
    return np.concatenate([by_position[p] for p in sorted(by_position)])


def compute_pseudo_labels(
    batches: Callable[[], Iterable[dict[str, np.ndarray]]],
    feature_fn: FeatureFn,
    rate: int,
    config: PseudoLabelConfig,
    out_dir: str,
    total_batches: int | None = None,
    name: str = "pseudo-labels",
) -> dict[str, np.ndarray]:
    """Fits (or loads) k-means and writes 50 Hz labels for every utterance.

    Args:
      batches: Returns a fresh pass over evaluation batches (every utterance once,
        uncropped, `example_mask` marking real rows, shapes from a few length buckets);
        called twice.
      feature_fn: From `mfcc_feature_fn` or `teacher_feature_fn`.
      rate: Frame rate of `feature_fn` (100 or 50 Hz).
      config: k-means options.
      out_dir: Receives labels.npz, centroids.npy and info.json.
      total_batches: For the progress bar.
      name: What the progress bars and log lines call this labelling (e.g. the bootstrap's
        MFCC labels are not the pseudo-labels stage's).

    Returns:
      Utterance key -> (frames,) int16 labels at 50 Hz.
    """
    os.makedirs(out_dir, exist_ok=True)
    if config.centroids_path:
        centroids = kmeans.load_centroids(config.centroids_path, k=config.num_clusters)
        fit_info = {"centroids_from": config.centroids_path}
    else:
        x = _fit_features(batches(), feature_fn, config, total_batches, name)
        if x.shape[0] < config.num_clusters:
            raise ValueError(
                f"only {x.shape[0]} frames to fit {config.num_clusters} clusters; "
                "raise fit_fraction or lower num_clusters"
            )
        log.info(
            "%s: fitting k-means: %d frames x %d dims, K=%d", name, *x.shape, config.num_clusters
        )
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
        del x
    write_atomic(os.path.join(out_dir, CENTROIDS_FILE), lambda f: np.save(f, centroids))

    labels: dict[str, np.ndarray] = {}
    # int16 holds K <= 32767 (the paper's 500); a larger K needs int32 to not wrap around.
    label_dtype = np.int16 if centroids.shape[0] <= np.iinfo(np.int16).max else np.int32
    centroids_dev = jnp.asarray(centroids, jnp.float32)
    with progress.bar(total=total_batches, desc=f"{name}: labelling", unit="batches") as bar:
        audio_rate = _AudioRate(bar)
        dispatched = (
            (
                (_keys(batch), batch["audio_mask"].sum(-1), batch["example_mask"]),
                feature_fn.labels(batch, centroids_dev),
            )
            for batch in batches()
        )
        for (keys, lengths, real), (ids, counts) in _fetch_behind(dispatched):
            ids = ids.astype(label_dtype)
            rows = zip(keys, ids[real], counts[real], lengths[real], strict=True)
            for key, row_ids, count, n in rows:
                labels[key] = _to_encoder_rate(row_ids[:count], rate, int(n))
            audio_rate.add(int(lengths[real].sum()))
            bar.update()
    log.info("%s: labelled %s", name, audio_rate.describe())
    write_atomic(os.path.join(out_dir, LABELS_FILE), lambda f: np.savez(f, **labels))
    usage = np.bincount(np.concatenate(list(labels.values())), minlength=config.num_clusters)
    info = {
        **fit_info,
        "num_clusters": config.num_clusters,
        "utterances": len(labels),
        "frames": int(usage.sum()),
        "clusters_used": int((usage > 0).sum()),
        "feature_rate_hz": rate,
    }
    write_atomic(
        os.path.join(out_dir, INFO_FILE), lambda f: f.write(json.dumps(info, indent=1).encode())
    )
    log.info("%s: %s", name, info)
    return labels
