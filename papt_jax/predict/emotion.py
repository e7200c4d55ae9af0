"""A converted emotion model (audEERING's, the MSP-Podcast challenge's) applied directly.

    from papt_jax.predict.emotion import EmotionPredictor
    p = EmotionPredictor.from_converted("ckpt/w2v2_L_robust_12")
    out = p.predict(waveforms, sample_rate=16000)  # {'arousal': {'prediction': (N,)}, ...}
    p.label_range                                  # (0.0, 1.0): the outputs' scale

No training and no run: the model's own head predicts every dimension it was trained on
(arousal, dominance, valence), on the scale it was trained on (`label_range`: both
published models map MSP-Podcast's 1..7 to 0..1 by (label - 1) / 6).

Recordings longer than `window_seconds` are cut into windows as for a run's regressors
(`windows.py`); the recording's prediction is the frame-weighted mean of its windows'
predictions. A recording of one window is predicted whole, as by the PyTorch model.
Recordings shorter than `limits.min_seconds(None)` are refused (`TooShortAudio`), as for a
run that did not record its training durations: the published models record none.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.errors import UserError
from papt_jax.predict import limits
from papt_jax.predict.waveforms import checked_model_inputs
from papt_jax.predict.windows import Batching, combine, split_windows, window_batches

PLAIN = "prediction"


class NotAnEmotionModelError(UserError, ValueError):
    """A converted folder without a published emotion model's head."""


@functools.cache
def _step(config, head_config, mesh):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from papt_jax.models.emotion_heads import EmotionModel

    model = EmotionModel(config, head_config)

    def step(variables, batch):
        return model.apply(variables, batch["audio"], batch["audio_mask"])

    return jax.jit(step, out_shardings=NamedSharding(mesh, P("data")))


class EmotionPredictor:
    """A converted emotion model for new recordings (module docstring).

    Args:
      checkpoint: a `ConvertedCheckpoint` with an emotion head.
      window_seconds, batch_seconds, num_buckets, num_devices: as for `Predictor`.

    Raises:
      NotAnEmotionModelError: the checkpoint has no emotion head.
    """

    def __init__(
        self,
        checkpoint,
        *,
        window_seconds: float = 20.0,
        batch_seconds: float = 80.0,
        num_buckets: int = 5,
        num_devices: int = 1,
    ):
        from papt_jax.train.sharding import make_mesh, replicate

        if checkpoint.emotion_head_config is None:
            raise NotAnEmotionModelError(
                "this converted checkpoint has no emotion head: it is an encoder only",
                hint="convert audEERING's w2v2-L-robust-12 folder or the MSP-Podcast "
                "challenge model, or predict with a finished run (--workdir)",
            )
        self.checkpoint = checkpoint
        self.head_config = checkpoint.emotion_head_config
        self.mesh = make_mesh(num_devices)
        self.batching = Batching(window_seconds, batch_seconds, num_buckets, self.mesh.size)
        variables = {
            "params": {"hubert": checkpoint.params, "head": checkpoint.emotion_head_params}
        }
        self.variables = replicate(variables, self.mesh)
        self._step = _step(checkpoint.config, self.head_config, self.mesh)

    @classmethod
    def from_converted(cls, directory: str | Path, **options) -> EmotionPredictor:
        """From a folder written by `python -m papt_jax.convert`."""
        from papt_jax.convert import load_converted

        return cls(load_converted(directory), **options)

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.head_config.labels)

    @property
    def label_range(self) -> tuple[float, float]:
        return tuple(self.head_config.label_range)

    def describe_scale(self) -> str:
        low, high = self.label_range
        return (
            f"{', '.join(self.dimensions)} on {low:g}..{high:g} (MSP-Podcast's 1..7 as "
            "(label - 1) / 6; values slightly outside can occur)"
        )

    @functools.cached_property
    def model_id(self) -> str:
        """A short hash of what decides the predictions (config, head, weights)."""
        h = hashlib.sha256()
        h.update(self.checkpoint.config.identity_json().encode())
        h.update(self.head_config.to_json().encode())
        for tree in (self.checkpoint.params, self.checkpoint.emotion_head_params):
            for leaf in jax.tree.leaves(tree):
                h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        return h.hexdigest()[:16]

    def check_duration(self, samples: np.ndarray, name) -> None:
        """Raises `TooShortAudio` for a 16 kHz recording shorter than `limits.min_seconds`."""
        limits.check_duration(samples, name, None)

    def run_batch(self, fields: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, dimensions) predictions and (rows, dim) pooled vectors of one batch."""
        from papt_jax.train.sharding import shard_batch

        preds, pooled = self._step(self.variables, shard_batch(fields, self.mesh))
        return np.asarray(jax.device_get(preds)), np.asarray(jax.device_get(pooled))

    def forward(
        self, waveforms: list[np.ndarray], progress: Callable[[float], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, dimensions) predictions and (N, dim) pooled vectors of prepared (16 kHz mono
        float32) recordings, each the frame-weighted mean over its windows."""
        windows = [
            w
            for i, x in enumerate(waveforms)
            for w in split_windows(i, len(x), self.batching.max_frames)
        ]
        preds = pooled = None
        for batch in window_batches(waveforms, windows, self.batching):
            p, v = self.run_batch({"audio": batch.audio, "audio_mask": batch.audio_mask})
            if preds is None:
                preds = np.zeros((len(windows), p.shape[1]), np.float32)
                pooled = np.zeros((len(windows), v.shape[1]), np.float32)
            preds[batch.windows] = p[: batch.windows.size]
            pooled[batch.windows] = v[: batch.windows.size]
            if progress is not None:
                progress(batch.seconds)
        frames = np.asarray([w.frames for w in windows])
        items = np.asarray([w.item for w in windows])
        n = len(waveforms)
        return combine(preds, frames, items, n), combine(pooled, frames, items, n)

    def predict(
        self, waveforms, sample_rate: int = SAMPLE_RATE, *, progress=None
    ) -> dict[str, dict[str, np.ndarray]]:
        """{dimension: {'prediction': (N,) float32}} for recordings (see `Predictor.predict`)."""
        prepared = checked_model_inputs(waveforms, sample_rate, self.check_duration)
        preds, _ = self.forward(prepared, progress)
        return {dim: {PLAIN: preds[:, j]} for j, dim in enumerate(self.dimensions)}
