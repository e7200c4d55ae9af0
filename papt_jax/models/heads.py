"""Task heads on top of the encoder: HuBERT's masked-prediction head and the emotion regressor."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from papt_jax.models.flat_random import Dropout


@dataclasses.dataclass(frozen=True)
class PretrainHeadConfig:
    """Masked-prediction head of fairseq HuBERT.

    Attributes:
      final_dim: Projection width (256 for base, 768 for large).
      num_label_rows: Rows of `label_embs_concat`. fairseq keeps its dictionary's 4
        special symbols, so 500 clusters give 504 rows; a head created here has one
        row per cluster.
      label_offset: Row of cluster 0 (4 for fairseq checkpoints, 0 for new heads).
      logit_temp: Cosine logits are divided by this (0.1).
    """

    final_dim: int = 256
    num_label_rows: int = 500
    label_offset: int = 0
    logit_temp: float = 0.1

    @property
    def num_clusters(self) -> int:
        return self.num_label_rows - self.label_offset


class PretrainHead(nn.Module):
    """Cosine-similarity logits between projected frames and label embeddings.

    fairseq scores the true label against every dictionary row (the true one
    excluded from the negatives), which is a softmax over all rows: we compute that
    softmax directly. Special dictionary rows stay in the softmax, as in fairseq.
    """

    config: PretrainHeadConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(batch, frames, dim) -> (batch, frames, num_label_rows) float32 logits."""
        cfg = self.config
        proj = nn.Dense(
            cfg.final_dim, kernel_init=nn.initializers.normal(stddev=0.02), name="final_proj"
        )(x.astype(jnp.float32))
        label_embs = self.param(
            "label_embs_concat",
            nn.initializers.uniform(scale=1.0),
            (cfg.num_label_rows, cfg.final_dim),
        )
        # torch.cosine_similarity clamps the product of norms at 1e-8.
        dots = jnp.einsum("btd,kd->btk", proj, label_embs)
        norms = jnp.linalg.norm(proj, axis=-1)[..., None] * jnp.linalg.norm(label_embs, axis=-1)
        return dots / jnp.maximum(norms, 1e-8) / cfg.logit_temp


class TorchBatchNorm(nn.Module):
    """BatchNorm over the batch axis with `torch.nn.BatchNorm1d`'s conventions.

    Training normalises with the batch mean and biased variance, and updates the running
    statistics with the *unbiased* batch variance (`var * n / (n - 1)`), as PyTorch does;
    Flax's `nn.BatchNorm` stores the biased one. `momentum` is PyTorch's (weight of the new
    batch, 0.1), i.e. Flax's 0.9. Parameter and statistic names (`scale`, `bias`, `mean`,
    `var`) are Flax's, so checkpoints of `nn.BatchNorm` heads load unchanged.

    Rows with `mask == False` (the padding rows of a partly filled batch) take no part in
    the batch statistics; they are still normalised. A batch with fewer than two real rows
    (where PyTorch refuses to train) leaves the running statistics unchanged.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(
        self, x: jax.Array, use_running_average: bool, mask: jax.Array | None = None
    ) -> jax.Array:
        """(batch, features) -> (batch, features); `mask` is an optional (batch,) bool."""
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            w = jnp.ones(x.shape[:1], x.dtype) if mask is None else mask.astype(x.dtype)
            n = w.sum()
            mean = (w[:, None] * x).sum(0) / jnp.maximum(n, 1.0)
            # Centred second pass: E[x^2] - E[x]^2 loses digits in float32.
            var = (w[:, None] * (x - mean) ** 2).sum(0) / jnp.maximum(n, 1.0)
            if not self.is_initializing():
                unbiased = var * n / jnp.maximum(n - 1.0, 1.0)
                update = n > 1.0
                m = self.momentum
                ra_mean.value = jnp.where(update, (1 - m) * ra_mean.value + m * mean, ra_mean.value)
                ra_var.value = jnp.where(
                    update, (1 - m) * ra_var.value + m * unbiased, ra_var.value
                )
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class RegressionHead(nn.Module):
    """The paper's light head on a pooled utterance vector.

    Linear(128) -> ReLU -> BatchNorm -> Dropout -> Linear(32) -> ReLU -> BatchNorm ->
    Dropout -> Linear(1). BatchNorm is `TorchBatchNorm`: PyTorch's `BatchNorm1d` defaults
    (momentum 0.1, eps 1e-5, unbiased running variance).
    """

    hidden_dims: tuple[int, ...] = (128, 32)
    dropout: float = 0.1

    @nn.compact
    def __call__(
        self, pooled: jax.Array, train: bool, example_mask: jax.Array | None = None
    ) -> jax.Array:
        """(batch, dim) -> (batch,) predictions.

        Args:
          pooled: (batch, dim) utterance vectors.
          train: Batch statistics and dropout (True) or running statistics (False).
          example_mask: Optional (batch,) bool, False on padding rows, which then stay out
            of the BatchNorm batch statistics.
        """
        x = pooled.astype(jnp.float32)
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            x = nn.relu(x)
            x = TorchBatchNorm(name=f"batch_norm_{i}")(
                x, use_running_average=not train, mask=example_mask
            )
            x = Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(1, name="output")(x)[:, 0]
