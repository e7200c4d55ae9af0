"""Task heads on top of the encoder: HuBERT's masked-prediction head and the emotion regressor."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


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


class RegressionHead(nn.Module):
    """The paper's light head on a pooled utterance vector.

    Linear(128) -> ReLU -> BatchNorm -> Dropout -> Linear(32) -> ReLU -> BatchNorm ->
    Dropout -> Linear(1). BatchNorm follows PyTorch's defaults (momentum 0.1 in
    PyTorch's convention, which is Flax's 0.9; eps 1e-5).
    """

    hidden_dims: tuple[int, ...] = (128, 32)
    dropout: float = 0.1

    @nn.compact
    def __call__(self, pooled: jax.Array, train: bool) -> jax.Array:
        """(batch, dim) -> (batch,) predictions."""
        x = pooled.astype(jnp.float32)
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            x = nn.relu(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"batch_norm_{i}"
            )(x)
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(1, name="output")(x)[:, 0]
