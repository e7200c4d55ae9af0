"""The masked-prediction loss of one pre-training batch: whole, or as micro-batches.

`loss_cfg` is `train.pretrain_objectives.PretrainLossConfig` (masking and loss weights).

HuBERT's masks are drawn for the whole batch at once, on the device (fairseq trims every
row to the batch's smallest mask count, so drawing per micro-batch would mask
differently). With k micro-batches (`train.accumulate`), each one adds its sums over
frames divided by the whole batch's counts, so the summed loss and gradient are those of
the one batch; dropout keys are `fold_in(dropout_key, j)` for micro-batch j.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from papt_jax.losses import masked_prediction_loss
from papt_jax.masking import compute_mask_indices_jax
from papt_jax.models.config import HubertConfig
from papt_jax.models.hubert import conv_output_lengths, lengths_to_mask
from papt_jax.models.tasks import HubertForPretraining
from papt_jax.train.accumulate import micro_batches, scan_sum


def audio_frame_mask(config: HubertConfig, audio_mask: jax.Array) -> jax.Array:
    """(batch, frames) frames computed from real audio, as the encoder's `frame_mask`."""
    lengths = audio_mask.sum(-1).astype(jnp.int32)
    frames = config.num_frames(audio_mask.shape[1])
    return lengths_to_mask(
        conv_output_lengths(lengths, config.conv_kernel, config.conv_stride), frames
    )


def frame_mask_of(model: HubertForPretraining, batch) -> jax.Array:
    """(batch, frames) valid-frame mask of a batch (real rows only), before running the model."""
    return audio_frame_mask(model.config, batch["audio_mask"]) & batch["example_mask"][:, None]


def _masks(model, loss_cfg, batch, mask_key):
    """(valid frames, masked frames), both (batch, frames) bool, drawn for the whole batch."""
    frame_mask = frame_mask_of(model, batch)
    mask_indices = compute_mask_indices_jax(
        mask_key, frame_mask, loss_cfg.mask_prob, loss_cfg.mask_length, loss_cfg.min_masks
    )
    return frame_mask, mask_indices


def _apply(model, params, batch, mask_indices, dropout_key, deterministic):
    speaker = batch["speaker"] if model.config.speaker_fusion != "none" else None
    return model.apply(
        {"params": params},
        batch["audio"],
        batch["audio_mask"],
        speaker,
        mask_indices,
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": dropout_key},
    )


def batch_loss(model, loss_cfg, params, batch, mask_key, dropout_key, deterministic):
    """(loss, stats) of a whole batch: stats hold `loss_sum`, `correct`, `count`,
    `features_pen`."""
    frame_mask, mask_indices = _masks(model, loss_cfg, batch, mask_key)
    logits, out = _apply(model, params, batch, mask_indices, dropout_key, deterministic)
    ce, stats = masked_prediction_loss(
        logits,
        batch["targets"],
        mask_indices,
        frame_mask,
        label_offset=model.head_config.label_offset,
        nomask_weight=loss_cfg.nomask_weight,
    )
    loss = ce + loss_cfg.features_pen_weight * out.features_pen
    stats["features_pen"] = out.features_pen
    return loss, stats


def accumulated_loss_and_grads(model, loss_cfg, params, batch, mask_key, dropout_key, steps, mesh):
    """(loss, stats), grads of the whole batch from `steps` micro-batches in one scan (the
    stats of `batch_loss` but `loss_sum`), equal to `batch_loss`'s up to float rounding."""
    cfg = model.config
    frame_mask, mask_indices = _masks(model, loss_cfg, batch, mask_key)
    has_label = frame_mask & (batch["targets"] >= 0)
    # The whole batch's counts, which every micro-batch's sums are divided by.
    n_masked = jnp.maximum((has_label & mask_indices).sum(), 1.0)
    n_unmasked = jnp.maximum((has_label & ~mask_indices).sum(), 1.0)
    features = cfg.conv_dim[-1]
    n_pen = jnp.maximum(audio_frame_mask(cfg, batch["audio_mask"]).sum() * features, 1.0)
    micro = micro_batches(
        {**batch, "frame_mask": frame_mask, "mask_indices": mask_indices}, steps, mesh
    )

    def micro_loss(params, mb, key):
        logits, out = _apply(model, params, mb, mb["mask_indices"], key, False)
        _, sums = masked_prediction_loss(
            logits,
            mb["targets"],
            mb["mask_indices"],
            mb["frame_mask"],
            label_offset=model.head_config.label_offset,
        )
        # The encoder's penalty is a mean over this micro-batch's frames: back to a sum.
        pen_sum = out.features_pen * jnp.maximum(out.frame_mask.sum() * features, 1.0)
        loss = sums["loss_sum"] / n_masked + loss_cfg.features_pen_weight * pen_sum / n_pen
        if loss_cfg.nomask_weight:
            loss = loss + loss_cfg.nomask_weight * sums["nomask_sum"] / n_unmasked
        return loss, {"correct": sums["correct"], "count": sums["count"], "pen_sum": pen_sum}

    def one(mb, index):
        key = jax.random.fold_in(dropout_key, index)
        (loss, stats), grads = jax.value_and_grad(micro_loss, has_aux=True)(params, mb, key)
        return (loss, stats), grads

    (loss, stats), grads = scan_sum(one, micro, steps)
    stats["features_pen"] = stats.pop("pen_sum") / n_pen
    return (loss, stats), grads
