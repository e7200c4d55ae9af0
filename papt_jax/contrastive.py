"""wav2vec 2.0's pre-training objective: negatives, contrastive logits, diversity, the sum.

Formulas follow fairseq (`fairseq/models/wav2vec/wav2vec2.py`: `sample_negatives`,
`compute_preds`, `get_extra_losses`; `fairseq/criterions/wav2vec_criterion.py`) and
transformers' `Wav2Vec2ForPreTraining`, which computes the same thing:

* Targets are the quantized CNN features of the masked frames, projected by `project_q`;
  predictions are the Transformer outputs at those frames, projected by `project_hid`.
* Negatives for a masked frame are `num_negatives` other masked frames of the same
  utterance, drawn uniformly with replacement (never the frame itself, never padding or
  unmasked frames).
* logits = cosine(prediction, [target, negatives]) / `logit_temp`; a negative whose
  vector equals the target exactly (a collapsed codebook) scores -inf.
* The contrastive loss is the cross-entropy with the target at index 0, summed over
  masked frames. The diversity loss is (G*V - perplexity) / (G*V), where perplexity is
  the quantizer's soft `prob_perplexity`. fairseq multiplies every extra loss by the
  number of masked frames (its `sample_size`) before adding it, and then divides the
  gradient by that number: `wav2vec2_loss` returns the sum and the count, and the training
  step divides.

Defaults and where they come from (`FAIRSEQ_WAV2VEC2_*` below): fairseq's `Wav2Vec2Config`
field defaults (num_negatives 100, logit_temp 0.1, latent_temp (2, 0.5, 0.999995)) and its
recipes `examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml`
(criterion `loss_weights: [0.1, 10]`: diversity 0.1, feature penalty 10) and
`wav2vec2_large_librivox.yaml` (`loss_weights: [0.1, 0]`, `latent_temp: [2.0, 0.1,
0.999995]`); quantizer-input dropout (`dropout_features`) 0.1 in the base recipe, 0.0 in
the large one and in `Wav2Vec2Config`. transformers' `Wav2Vec2Config` agrees (`num_negatives` 100,
`contrastive_logits_temperature` 0.1, `diversity_loss_weight` 0.1) but has no feature
penalty and leaves the temperature schedule to the training script.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "FAIRSEQ_WAV2VEC2_BASE",
    "FAIRSEQ_WAV2VEC2_LARGE",
    "contrastive_logits",
    "contrastive_loss",
    "diversity_loss",
    "gumbel_temperature",
    "sample_negative_indices",
    "wav2vec2_loss",
]

# fairseq's recipe values (see the module docstring for the files).
FAIRSEQ_WAV2VEC2_BASE = {
    "num_negatives": 100,
    "logit_temperature": 0.1,
    "diversity_weight": 0.1,
    "features_pen_weight": 10.0,
    "gumbel_temperature": (2.0, 0.5, 0.999995),
    "quantizer_dropout": 0.1,  # the recipe's `dropout_features`
}
FAIRSEQ_WAV2VEC2_LARGE = {
    **FAIRSEQ_WAV2VEC2_BASE,
    "features_pen_weight": 0.0,
    "gumbel_temperature": (2.0, 0.1, 0.999995),
    "quantizer_dropout": 0.0,  # also `Wav2Vec2Config.dropout_features`'s default
}

# torch.cosine_similarity clamps each norm at this before dividing.
_COSINE_EPS = 1e-8


def gumbel_temperature(
    step: jax.Array | int, max_temp: float, min_temp: float, decay: float
) -> jax.Array:
    """fairseq's schedule: `max(max_temp * decay ** step, min_temp)`.

    The power is taken as `exp(step * log(decay))` with `log(decay)` in float64 on the
    host: `decay ** step` in float32 would amplify decay's rounding error (about 3e-8)
    by `step` (1 % after 400 000 updates).

    Args:
      step: Update count (a traced int or a Python int).
      max_temp, min_temp, decay: fairseq's `latent_temp` triple.

    Returns:
      () float32 temperature.
    """
    if not (0.0 < decay <= 1.0 and 0.0 < min_temp <= max_temp):
        raise ValueError(f"bad temperature schedule {(max_temp, min_temp, decay)}")
    power = jnp.exp(jnp.asarray(step, jnp.float32) * math.log(decay))
    return jnp.maximum(max_temp * power, min_temp).astype(jnp.float32)


def sample_negative_indices(
    key: jax.Array, mask_indices: jax.Array, num_negatives: int
) -> jax.Array:
    """Draws negatives for every masked frame from the same utterance's masked frames.

    As fairseq's `sample_negatives` and transformers' `_sample_negative_indices`: for the
    r-th of an utterance's M masked frames, draw uniformly from [0, M - 2] and add one to
    draws >= r, so every other masked frame is equally likely and the frame itself never
    comes up. Indices are frame positions within the row (not offsets into the flattened
    batch as in transformers), so the gather stays inside a row's data shard.

    Frames that are not masked, and every frame of a row with fewer than two masked
    frames, get their own index: such "negatives" equal the target and score -inf, so they
    add nothing to the loss.

    Args:
      key: PRNG key.
      mask_indices: (batch, frames) bool masked frames (never padding).
      num_negatives: K.

    Returns:
      (batch, frames, K) int32 frame indices.
    """
    mask = mask_indices.astype(bool)
    batch, frames = mask.shape
    count = mask.sum(axis=1).astype(jnp.int32)
    rank = jnp.cumsum(mask, axis=1).astype(jnp.int32) - 1
    # Masked frames first, in frame order: position_of[b, r] is the r-th masked frame.
    position_of = jnp.argsort(~mask, axis=1, stable=True).astype(jnp.int32)
    high = jnp.maximum(count - 1, 1)[:, None, None]
    draws = jax.random.randint(key, (batch, frames, num_negatives), 0, high, dtype=jnp.int32)
    draws = draws + (draws >= rank[:, :, None]).astype(jnp.int32)
    negatives = jnp.take_along_axis(
        position_of, draws.reshape(batch, frames * num_negatives), axis=1
    ).reshape(batch, frames, num_negatives)
    usable = mask & (count >= 2)[:, None]
    own = jnp.broadcast_to(jnp.arange(frames, dtype=jnp.int32)[None, :, None], negatives.shape)
    return jnp.where(usable[:, :, None], negatives, own)


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _COSINE_EPS)


def contrastive_logits(
    predicted: jax.Array,
    targets: jax.Array,
    negative_indices: jax.Array,
    logit_temperature: float,
) -> jax.Array:
    """Cosine similarity of each prediction with its target and its negatives.

    Args:
      predicted: (batch, frames, dim) projected Transformer outputs.
      targets: (batch, frames, dim) projected quantized features.
      negative_indices: (batch, frames, K) frame indices within the row
        (`sample_negative_indices`, or given ones).
      logit_temperature: The similarities are divided by this (0.1).

    Returns:
      (batch, frames, 1 + K) float32 logits, the target first; a negative equal to the
      target (every element) is -inf, as in fairseq's `compute_preds`.
    """
    unit_predicted = _unit(predicted.astype(jnp.float32))
    unit_targets = _unit(targets.astype(jnp.float32))  # fairseq: `targets.float()`
    # The target and the negatives are frames of the same row, so their logits are read
    # from the cosine of every prediction with every target of its row, (batch, frames,
    # frames) (the target on the diagonal), rather than from K gathered target vectors per
    # frame, (batch, frames, K, dim): the same numbers (up to float32 summation order) in
    # a fraction of the memory and memory traffic.
    # HIGHEST: a float32 product stays float32 on every backend (TPU's default would
    # round the inputs to bfloat16, which the temperature of 0.1 magnifies).
    cosine = jnp.einsum(
        "btd,bsd->bts", unit_predicted, unit_targets, precision=jax.lax.Precision.HIGHEST
    )
    positive = jnp.diagonal(cosine, axis1=1, axis2=2)
    negative = jnp.take_along_axis(cosine, negative_indices, axis=2)
    logits = jnp.concatenate([positive[..., None], negative], axis=-1) / logit_temperature
    # Frames whose target vectors are equal element for element (the same codebook
    # entries); a negative among them scores -inf, as fairseq's `neg_is_pos`. Asked as
    # "the largest absolute difference is 0", which XLA reduces as it compares, where
    # `jnp.all(a == b)` makes the CPU backend hold (batch, frames, frames, dim) booleans.
    # For finite values the two agree (a - b is 0 only when a == b) except where a
    # backend flushes subnormal differences, i.e. components both below about 1e-30.
    fixed = jax.lax.stop_gradient(targets)
    difference = jnp.max(jnp.abs(fixed[:, :, None, :] - fixed[:, None, :, :]), axis=-1)
    same_target = difference == 0
    neg_is_pos = jnp.take_along_axis(same_target, negative_indices, axis=2)
    return logits.at[..., 1:].set(jnp.where(neg_is_pos, -jnp.inf, logits[..., 1:]))


def contrastive_loss(logits: jax.Array, mask_indices: jax.Array) -> dict[str, jax.Array]:
    """Cross-entropy with the target at index 0, summed over masked frames.

    Args:
      logits: (batch, frames, 1 + K) from `contrastive_logits`.
      mask_indices: (batch, frames) bool masked frames.

    Returns:
      `contrastive_sum`, `correct` (masked frames whose target scores highest) and
      `count` (masked frames), all () float32.
    """
    weights = mask_indices.astype(jnp.float32)
    ce = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
    # Unmasked frames are multiplied by 0; keep a non-finite value there out of the sum.
    ce = jnp.where(weights > 0, ce, 0.0)
    correct = (jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32) * weights
    return {"contrastive_sum": ce.sum(), "correct": correct.sum(), "count": weights.sum()}


def diversity_loss(prob_perplexity: jax.Array, num_codevectors: int) -> jax.Array:
    """(G*V - perplexity) / (G*V): 0 when every codebook entry is used equally."""
    return (num_codevectors - prob_perplexity) / num_codevectors


def wav2vec2_loss(
    projected: jax.Array,
    projected_quantized: jax.Array,
    prob_perplexity: jax.Array,
    mask_indices: jax.Array,
    negative_indices: jax.Array,
    *,
    num_codevectors: int,
    logit_temperature: float,
    diversity_weight: float,
    features_pen: jax.Array | float = 0.0,
    features_pen_weight: float = 0.0,
) -> dict[str, jax.Array]:
    """The whole objective as fairseq's criterion sums it.

    `loss_sum = contrastive_sum + count * (diversity_weight * diversity +
    features_pen_weight * features_pen)`; dividing by `count` gives fairseq's per-frame
    loss and gradient. transformers' `loss` is the same sum without the feature penalty.

    Args:
      projected: (batch, frames, dim) `project_hid` output.
      projected_quantized: (batch, frames, dim) `project_q` output.
      prob_perplexity: () the quantizer's soft perplexity over the masked frames.
      mask_indices: (batch, frames) bool masked frames.
      negative_indices: (batch, frames, K) frame indices within the row.
      num_codevectors: G * V.
      logit_temperature: Cosine logits are divided by this.
      diversity_weight: Weight of the diversity loss (0.1).
      features_pen: () mean square of the CNN features.
      features_pen_weight: Its weight (fairseq base 10, large 0).

    Returns:
      `loss_sum`, `contrastive_sum`, `diversity` (per-frame, unweighted), `count`,
      `correct`, all () float32.
    """
    logits = contrastive_logits(projected, projected_quantized, negative_indices, logit_temperature)
    stats = contrastive_loss(logits, mask_indices)
    diversity = diversity_loss(prob_perplexity, num_codevectors)
    extra = diversity_weight * diversity + features_pen_weight * features_pen
    loss_sum = stats["contrastive_sum"] + stats["count"] * extra
    return {**stats, "diversity": diversity, "loss_sum": loss_sum}
