"""Training losses: HuBERT masked prediction and 1 - CCC."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from papt_jax.metrics import ccc_jnp


def masked_prediction_loss(
    logits: jax.Array,
    targets: jax.Array,
    mask_indices: jax.Array,
    frame_mask: jax.Array,
    label_offset: int = 0,
    nomask_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """HuBERT's cross-entropy on pseudo-labels.

    fairseq sums the cross-entropy over masked frames and divides by their number;
    unmasked frames enter with `nomask_weight` (0 by default, as in HuBERT).

    Args:
      logits: (batch, frames, rows) float32.
      targets: (batch, frames) int cluster ids, -1 where there is no label.
      mask_indices: (batch, frames) bool frames that were masked.
      frame_mask: (batch, frames) bool real frames.
      label_offset: row of cluster 0 in the logits (4 for fairseq heads).
      nomask_weight: weight of the loss on unmasked frames.

    Returns:
      The scalar loss and a dict of sums/counts for metrics (`loss_sum`, `correct`,
      `count` over masked frames).
    """
    has_label = frame_mask & (targets >= 0)
    rows = jnp.clip(targets, 0) + label_offset
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, rows)
    masked = (has_label & mask_indices).astype(jnp.float32)
    unmasked = (has_label & ~mask_indices).astype(jnp.float32)
    n_masked = jnp.maximum(masked.sum(), 1.0)
    loss = (ce * masked).sum() / n_masked
    if nomask_weight:
        loss = loss + nomask_weight * (ce * unmasked).sum() / jnp.maximum(unmasked.sum(), 1.0)
    correct = ((jnp.argmax(logits, -1) == rows).astype(jnp.float32) * masked).sum()
    return loss, {"loss_sum": (ce * masked).sum(), "correct": correct, "count": masked.sum()}


def ccc_loss(predictions: jax.Array, labels: jax.Array, weights: jax.Array | None = None):
    """1 - CCC over the batch (the paper's fine-tuning loss); weights mask padding rows."""
    return 1.0 - ccc_jnp(predictions, labels, weights)
