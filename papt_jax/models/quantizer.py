"""wav2vec 2.0's pre-training head: the Gumbel product quantizer, `project_q`, `project_hid`.

A port of fairseq's `GumbelVectorQuantizer` (as `transformers.Wav2Vec2GumbelVectorQuantizer`
holds it) and of the two projections of `Wav2Vec2ForPreTraining`. Parameter names follow the
transformers `state_dict` (`quantizer.codevectors`, `quantizer.weight_proj`, `project_q`,
`project_hid`), so a converted `ForPreTraining` checkpoint keeps its quantizer; the
codebook is stored without transformers' leading axis of 1, (G * V, codevector_dim / G).

The losses built on these outputs (negatives, contrastive logits, diversity) live in
`papt_jax.contrastive`; this module is architecture only.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from papt_jax.models.flat_random import Dropout


@dataclasses.dataclass(frozen=True)
class QuantizerHeadConfig:
    """wav2vec 2.0's pre-training head (transformers' `Wav2Vec2Config` field names).

    Stored beside a converted encoder as `quantizer_config.json`.

    Attributes:
      num_codevector_groups: G, codebooks concatenated into one quantized vector (2).
      num_codevectors_per_group: V, entries of each codebook (320).
      codevector_dim: Width of a quantized vector, all groups together (256 base, 768
        large); each group's entries have `codevector_dim / G` values.
      proj_codevector_dim: Width both sides are projected to before the cosine
        similarity (256 base, 768 large; fairseq's `final_dim`).
      contrastive_logits_temperature: Cosine logits are divided by this (fairseq's
        `logit_temp`, 0.1).
      feat_quantizer_dropout: Dropout on the quantizer's input in training (fairseq's
        `dropout_features`: 0.1 in its base recipe, 0 in large and transformers'
        default); None: the source did not say (a model built with None applies none).
    """

    num_codevector_groups: int = 2
    num_codevectors_per_group: int = 320
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    contrastive_logits_temperature: float = 0.1
    feat_quantizer_dropout: float | None = None

    def __post_init__(self):
        rate = self.feat_quantizer_dropout
        if rate is not None and not 0.0 <= rate < 1.0:
            raise ValueError(f"feat_quantizer_dropout must be in [0, 1), got {rate}")
        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError(
                f"codevector_dim {self.codevector_dim} is not divisible by "
                f"num_codevector_groups {self.num_codevector_groups}"
            )

    @property
    def num_codevectors(self) -> int:
        """G * V, the diversity loss's normaliser."""
        return self.num_codevector_groups * self.num_codevectors_per_group


@struct.dataclass
class QuantizerOutput:
    """What the quantizer returns.

    Attributes:
      quantized: (batch, frames, codevector_dim) the chosen codevectors, groups
        concatenated.
      prob_perplexity: () perplexity of the softmax (no noise) averaged over the selected
        frames, summed over groups: fairseq's `prob_perplexity`, the diversity loss's input.
      code_perplexity: () the same for the argmax codes (one-hot): how many entries are
        really used; near 1 per group means a collapsed codebook.
      codes: (batch, frames, groups) int32 index of the chosen entry of each group.
      prob_sum: (groups, vars) the softmax summed over the selected frames: divided by
        their number, the marginal `prob_perplexity` is taken of (micro-batches add these
        up to the whole batch's marginal).
      code_sum: (groups, vars) the same for the argmax codes.
    """

    quantized: jax.Array
    prob_perplexity: jax.Array
    code_perplexity: jax.Array
    codes: jax.Array
    prob_sum: jax.Array
    code_sum: jax.Array


def marginal_perplexity(marginal: jax.Array) -> jax.Array:
    """exp(entropy) of each group's frame-averaged distribution, summed over groups.

    Args:
      marginal: (groups, vars) average distribution of each group.

    Returns:
      () float32, transformers' value (`xlogy`: 0 log 0 = 0; fairseq adds 1e-7 inside the
      log, which moves the entropy by up to vars * 1e-7). Where a codebook entry's
      average probability underflows to 0, `xlogy`'s gradient is NaN (in PyTorch and in
      JAX), which poisons every gradient; the log's argument is floored at the smallest
      normal float instead, which leaves the value unchanged and the gradient finite
      (the entry's probabilities have zero gradient there anyway).
    """
    tiny = jnp.finfo(jnp.float32).tiny
    entropy = -(marginal * jnp.log(jnp.maximum(marginal, tiny))).sum(-1)
    return jnp.exp(entropy).sum()


def _frame_sums(probs: jax.Array, frame_weights: jax.Array) -> jax.Array:
    """(batch, frames, groups, vars), (batch, frames) -> (groups, vars) weighted sum."""
    return jnp.einsum("btgv,bt->gv", probs, frame_weights)


def _weights(frame_weights: jax.Array | None, batch: int, frames: int) -> jax.Array:
    if frame_weights is None:
        return jnp.ones((batch, frames), jnp.float32)
    return frame_weights.astype(jnp.float32)


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer with a hard Gumbel-softmax (straight-through) in training.

    Each frame's features are projected to G groups of V logits. Training draws one
    Gumbel sample per logit, takes the argmax of `softmax((logits + noise) / temperature)`
    as a one-hot vector and passes the soft probabilities' gradient straight through
    (`hard - stop_gradient(soft) + soft`, PyTorch's `gumbel_softmax(hard=True)`).
    Evaluation takes the argmax of the logits. The chosen entries of the G codebooks are
    concatenated.
    """

    config: QuantizerHeadConfig

    def setup(self):
        cfg = self.config
        groups, num_vars = cfg.num_codevector_groups, cfg.num_codevectors_per_group
        self.codevectors = self.param(
            "codevectors",
            nn.initializers.uniform(scale=1.0),
            (groups * num_vars, cfg.codevector_dim // groups),
        )
        self.weight_proj = nn.Dense(
            groups * num_vars,
            kernel_init=nn.initializers.normal(stddev=1.0),
            bias_init=nn.initializers.zeros,
        )

    def logits(self, features: jax.Array) -> jax.Array:
        """(batch, frames, conv_dim) -> (batch, frames, groups, vars) float32 logits."""
        cfg = self.config
        batch, frames, _ = features.shape
        logits = self.weight_proj(features.astype(jnp.float32))
        return logits.reshape(
            batch, frames, cfg.num_codevector_groups, cfg.num_codevectors_per_group
        )

    def code_sums(
        self, features: jax.Array, frame_weights: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """`prob_sum` and `code_sum` of `QuantizerOutput` alone (no sampling, no codebook).

        Args:
          features: (batch, frames, conv_dim) the quantizer's input.
          frame_weights: (batch, frames) the frames summed over; None: all.

        Returns:
          Two (groups, vars) float32 arrays.
        """
        logits = self.logits(features)
        weights = _weights(frame_weights, *logits.shape[:2])
        hard = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=jnp.float32)
        return _frame_sums(jax.nn.softmax(logits, axis=-1), weights), _frame_sums(hard, weights)

    def __call__(
        self,
        features: jax.Array,
        temperature: jax.Array | float,
        frame_weights: jax.Array | None = None,
        deterministic: bool = True,
        gumbel_noise: jax.Array | None = None,
    ) -> QuantizerOutput:
        """Quantizes every frame.

        Args:
          features: (batch, frames, conv_dim) the feature projection's LayerNorm output
            (wav2vec 2.0's `extract_features`).
          temperature: Gumbel-softmax temperature (a schedule's value; see
            `papt_jax.contrastive.gumbel_temperature`). Unused when deterministic.
          frame_weights: (batch, frames) bool/float, the frames the perplexities average
            over (the masked frames, as fairseq and transformers); None: all frames.
          deterministic: Argmax codes (evaluation) instead of Gumbel samples (training).
          gumbel_noise: (batch, frames, groups, vars) float32 Gumbel(0, 1) draws to use
            instead of drawing from the 'gumbel' rng stream (the training step draws them
            for the whole batch, so micro-batches see the same; tests reproduce PyTorch's
            draw this way).

        Returns:
          A `QuantizerOutput`.
        """
        cfg = self.config
        groups, num_vars = cfg.num_codevector_groups, cfg.num_codevectors_per_group
        logits = self.logits(features)
        batch, frames = logits.shape[:2]
        soft = jax.nn.softmax(logits, axis=-1)
        hard_codes = jnp.argmax(logits, axis=-1)
        if deterministic:
            codes = hard_codes
            onehot = jax.nn.one_hot(codes, num_vars, dtype=jnp.float32)
        else:
            if gumbel_noise is None:
                gumbel_noise = jax.random.gumbel(self.make_rng("gumbel"), logits.shape)
            sampled = jax.nn.softmax((logits + gumbel_noise) / temperature, axis=-1)
            codes = jnp.argmax(sampled, axis=-1)
            hard = jax.nn.one_hot(codes, num_vars, dtype=jnp.float32)
            # PyTorch's straight-through estimator, written the same way so the forward
            # values round identically.
            onehot = hard - jax.lax.stop_gradient(sampled) + sampled
        weights = _weights(frame_weights, batch, frames)
        total = jnp.maximum(weights.sum(), 1.0)
        table = self.codevectors.reshape(groups, num_vars, -1)
        quantized = jnp.einsum("btgv,gvd->btgd", onehot, table).reshape(batch, frames, -1)
        prob_sum = _frame_sums(soft, weights)
        code_sum = _frame_sums(jax.nn.one_hot(hard_codes, num_vars, dtype=jnp.float32), weights)
        return QuantizerOutput(
            quantized=quantized,
            prob_perplexity=marginal_perplexity(prob_sum / total),
            code_perplexity=marginal_perplexity(code_sum / total),
            codes=codes.astype(jnp.int32),
            prob_sum=prob_sum,
            code_sum=code_sum,
        )


class QuantizerHead(nn.Module):
    """`project_hid` on the Transformer output, the quantizer and `project_q` on the CNN
    features: the two sides of wav2vec 2.0's contrastive loss.

    Dropout on the quantizer's input in training is `config.feat_quantizer_dropout`
    (fairseq's `dropout_features`, applied where fairseq applies it: to the normalised CNN
    features the quantizer reads, not to the Transformer's input).

    Attributes:
      config: The head's shape (stored with a converted checkpoint).
    """

    config: QuantizerHeadConfig

    def setup(self):
        cfg = self.config
        dense_init = nn.initializers.normal(stddev=0.02)  # transformers' initializer_range
        self.project_hid = nn.Dense(cfg.proj_codevector_dim, kernel_init=dense_init)
        self.quantizer = GumbelVectorQuantizer(cfg)
        self.project_q = nn.Dense(cfg.proj_codevector_dim, kernel_init=dense_init)
        self.feature_dropout = Dropout(cfg.feat_quantizer_dropout or 0.0)

    def _quantizer_input(self, extract_features, deterministic, dropout_rng):
        features = extract_features.astype(jnp.float32)
        return self.feature_dropout(features, deterministic=deterministic, rng=dropout_rng)

    def code_sums(
        self,
        extract_features: jax.Array,
        mask_time_indices: jax.Array | None = None,
        deterministic: bool = True,
        dropout_rng: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """The quantizer's `prob_sum` and `code_sum` over the masked frames, nothing else
        (a pass over micro-batches needs them before any gradient; same arguments as
        `__call__`).

        Returns:
          Two (groups, vars) float32 arrays.
        """
        features = self._quantizer_input(extract_features, deterministic, dropout_rng)
        return self.quantizer.code_sums(features, mask_time_indices)

    def __call__(
        self,
        hidden_states: jax.Array,
        extract_features: jax.Array,
        temperature: jax.Array | float,
        mask_time_indices: jax.Array | None = None,
        deterministic: bool = True,
        gumbel_noise: jax.Array | None = None,
        dropout_rng: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, QuantizerOutput]:
        """Projects both sides.

        Args:
          hidden_states: (batch, frames, hidden) the encoder output (`f_p` for PAPT).
          extract_features: (batch, frames, conv_dim) the quantizer's input.
          temperature: Gumbel-softmax temperature.
          mask_time_indices: (batch, frames) bool masked frames, over which the
            perplexities are taken; None: all frames.
          deterministic: No dropout, argmax codes.
          gumbel_noise: Optional explicit noise, see `GumbelVectorQuantizer`.
          dropout_rng: The key of the quantizer-input dropout; None: the 'dropout' stream.

        Returns:
          (projected_states, projected_quantized_states), both (batch, frames,
          proj_codevector_dim) float32, and the quantizer's output.
        """
        projected = self.project_hid(hidden_states.astype(jnp.float32))
        features = self._quantizer_input(extract_features, deterministic, dropout_rng)
        quantizer_out = self.quantizer(
            features,
            temperature,
            frame_weights=mask_time_indices,
            deterministic=deterministic,
            gumbel_noise=gumbel_noise,
        )
        projected_quantized = self.project_q(quantizer_out.quantized)
        return projected, projected_quantized, quantizer_out
