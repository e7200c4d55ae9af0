"""Batched prediction of a regressor (encoder + head): the jitted step and the pass.

Shared by fine-tuning's validation, the evaluate stage and `papt_jax.predict`.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import numpy as np
from jax.sharding import Mesh

from papt_jax import progress
from papt_jax.metrics import ccc
from papt_jax.models.tasks import HubertForRegression
from papt_jax.train.sharding import data_sharded, replicated, shard_batch


def speaker_ids(model, batch):
    """The batch's speaker ids when the encoder fuses speakers, else None."""
    return batch["speaker"] if model.config.speaker_fusion != "none" else None


def make_predict_step(model: HubertForRegression, scaling, mesh: Mesh, variables_shardings=None):
    """Returns a jitted `(variables, batch) -> (predictions (B,), pooled (B, D))`.

    `variables_shardings` is where {'params', 'batch_stats'} live (the train state's);
    None: replicated.
    """

    def predict_step(variables, batch):
        preds, pooled = model.apply(
            variables, batch["audio"], batch["audio_mask"], speaker_ids(model, batch), train=False
        )
        return scaling.from_model(preds), pooled

    variables = replicated(mesh) if variables_shardings is None else variables_shardings
    return jax.jit(
        predict_step,
        in_shardings=(variables, data_sharded(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
    )


def predict(
    predict_step,
    variables,
    batches: Iterable[dict[str, np.ndarray]],
    mesh: Mesh,
    extra_keys: tuple[str, ...] = (),
    description: str | None = "predict",
) -> dict[str, np.ndarray]:
    """Runs `predict_step` over every batch and gathers real rows on the host.

    Device results are collected first and read once at the end, so the loop does
    not wait for each batch.

    Args:
      predict_step: From `make_predict_step`.
      variables: {'params', 'batch_stats'}.
      batches: One pass of evaluation batches.
      mesh: Device mesh.
      extra_keys: Further batch fields to return (e.g. 'speaker_id').
      description: Name of the progress bar (None: no bar).

    Returns:
      Dict with `key`, `speaker`, `arousal`, `valence`, the `extra_keys`,
      `prediction` (N,) and `pooled` (N, D), in iteration order, padding rows removed.
    """
    fields = ("key", "speaker", "arousal", "valence", *extra_keys)
    outputs, host = [], []
    shown = description is not None and jax.process_index() == 0
    for batch in progress.bar(batches, desc=description or "", unit="batches", disable=not shown):
        outputs.append(predict_step(variables, shard_batch(batch, mesh)))
        host.append({k: batch[k] for k in (*fields, "example_mask")})
    if not outputs:
        raise ValueError("predict() got no batches")
    outputs = jax.device_get(outputs)
    keep = np.concatenate([h["example_mask"] for h in host])
    result = {k: np.concatenate([h[k] for h in host])[keep] for k in fields}
    result["prediction"] = np.concatenate([o[0] for o in outputs])[keep]
    result["pooled"] = np.concatenate([o[1] for o in outputs])[keep]
    return result


def validation_ccc(predict_step, variables, batches, mesh, dimension: str) -> dict[str, float]:
    """CCC of `dimension` over a full pass of validation batches."""
    out = predict(predict_step, variables, batches, mesh)
    return {"ccc": ccc(out["prediction"], out[dimension])}
