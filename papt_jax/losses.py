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
      The scalar loss and a dict of sums/counts (`loss_sum`, `correct`, `count` over
      masked frames; `nomask_sum`, `nomask_count` over unmasked labelled frames), from
      which a batch split into micro-batches puts the loss together again.
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
    return loss, {
        "loss_sum": (ce * masked).sum(),
        "correct": correct,
        "count": masked.sum(),
        "nomask_sum": (ce * unmasked).sum(),
        "nomask_count": unmasked.sum(),
    }


def ccc_loss(predictions: jax.Array, labels: jax.Array, weights: jax.Array | None = None):
    """1 - CCC over the batch (the paper's fine-tuning loss); weights mask padding rows."""
    return 1.0 - ccc_jnp(predictions, labels, weights)


def weighted_ccc_loss(
    predictions: jax.Array, labels: jax.Array, example_mask: jax.Array, sample_weights: jax.Array
):
    """1 - CCC of the weighted batch (B2's up-weighting of adaptation-set utterances).

    Means, variances and the covariance are weighted averages, so an utterance of weight 2
    counts as two copies of it; padding rows (`example_mask` False) weigh 0. A common
    factor on all weights leaves the loss unchanged.

    Args:
      predictions: (batch,) float.
      labels: (batch,) float.
      example_mask: (batch,) bool, real rows.
      sample_weights: (batch,) float >= 0.

    Returns:
      () float32 loss.
    """
    mask = example_mask.astype(jnp.float32)
    weights = mask * sample_weights.astype(jnp.float32)
    # Rescale to sum to the number of real rows: `ccc_jnp` floors the weight total at 1,
    # which would otherwise break the scale invariance for small weights.
    weights = weights * (mask.sum() / jnp.maximum(weights.sum(), 1e-12))
    return 1.0 - ccc_jnp(predictions, labels, weights)
