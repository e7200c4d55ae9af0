"""wav2vec 2.0's loss of one pre-training batch: whole, or as micro-batches.

`loss_cfg` is `train.pretrain_objectives.PretrainLossConfig` (masking, the feature penalty
weight, and `contrastive`: negatives, diversity weight, Gumbel temperature schedule).

Everything random is drawn for the whole batch at once (`draws`): the masks (fairseq
trims every row to the batch's smallest mask count), the negatives and the Gumbel noise
of the quantizer, so k micro-batches (`train.accumulate`) see exactly what one batch of
all their rows sees. The loss, fairseq's sum divided by the masked frames N, is

    contrastive_sum / N + diversity_weight * (GV - perplexity(marginal)) / GV
                        + features_pen_weight * features_pen,

where `marginal` is the quantizer's softmax averaged over the batch's masked frames. The
first and last terms are sums over frames: each micro-batch adds its sums divided by the
whole batch's counts. The diversity term is a nonlinear function of the whole batch's
marginal, so it is no sum over micro-batches (fairseq's `update_freq` takes each
micro-batch's own perplexity instead). Here a first pass over the micro-batches runs the
CNN and the quantizer's logits only (no Transformer) and adds up their softmax sums S_j,
so the marginal M = sum_j S_j / N is known before any gradient; the gradient of the
diversity term is then d f(M) = f'(M) . sum_j dS_j / N, which each micro-batch's backward
pass adds as the gradient of `f'(M) . S_j / N` (f'(M) held fixed). Loss, gradient and
logged metrics are those of the one batch up to float rounding. Dropout keys are
`fold_in(dropout_key, j)` for micro-batch j, as in masked prediction, so with dropout on
the micro-batches drop other units than one batch would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from papt_jax.contrastive import (
    contrastive_logits,
    contrastive_loss,
    diversity_loss,
    gumbel_temperature,
    sample_negative_indices,
    wav2vec2_loss,
)
from papt_jax.masking import compute_mask_indices_jax
from papt_jax.models.quantizer import marginal_perplexity
from papt_jax.train.accumulate import micro_batches, scan_sum
from papt_jax.train.masked_prediction import audio_frame_mask, frame_mask_of


def draws(model, loss_cfg, batch, mask_key, dropout_key) -> dict[str, jax.Array]:
    """The step's random choices for the whole batch.

    Returns:
      `mask_indices` (batch, frames) bool, `negatives` (batch, frames, K) int32 frame
      indices within the row (from `mask_key`'s second stream) and `gumbel`
      (batch, frames, groups, vars) float32 Gumbel(0, 1) noise (from `dropout_key`'s).
    """
    head = model.head_config
    frame_mask = frame_mask_of(model, batch)
    mask_indices = compute_mask_indices_jax(
        mask_key, frame_mask, loss_cfg.mask_prob, loss_cfg.mask_length, loss_cfg.min_masks
    )
    negatives = sample_negative_indices(
        jax.random.fold_in(mask_key, 1), mask_indices, loss_cfg.contrastive.num_negatives
    )
    shape = (*mask_indices.shape, head.num_codevector_groups, head.num_codevectors_per_group)
    gumbel = jax.random.gumbel(jax.random.fold_in(dropout_key, 1), shape, jnp.float32)
    return {"mask_indices": mask_indices, "negatives": negatives, "gumbel": gumbel}


def _quantizer_dropout_key(dropout_key):
    return jax.random.fold_in(dropout_key, 2)


def _apply(model, params, batch, drawn, temperature, dropout_key, deterministic):
    speaker = batch["speaker"] if model.config.speaker_fusion != "none" else None
    return model.apply(
        {"params": params},
        batch["audio"],
        batch["audio_mask"],
        speaker,
        drawn["mask_indices"],
        deterministic=deterministic,
        temperature=temperature,
        gumbel_noise=None if deterministic else drawn["gumbel"],
        quantizer_dropout_rng=None if deterministic else _quantizer_dropout_key(dropout_key),
        rngs=None if deterministic else {"dropout": dropout_key},
    )


def _temperature(loss_cfg, step):
    c = loss_cfg.contrastive
    return gumbel_temperature(step + c.step_offset, *c.temperature)


def batch_loss(model, loss_cfg, params, batch, mask_key, dropout_key, step, deterministic):
    """(loss, stats) of a whole batch: fairseq's sum divided by the masked frames.

    Evaluation (`deterministic`) takes the quantizer's argmax codes (no noise, no
    dropout). Stats: `loss_sum`, `correct`, `count` (the validation sums) and the logged
    parts: `contrastive` (per masked frame), `diversity`, `prob_perplexity`,
    `code_perplexity`, `temperature`, `features_pen`.
    """
    temperature = _temperature(loss_cfg, step)
    drawn = draws(model, loss_cfg, batch, mask_key, dropout_key)
    projected, projected_q, quantizer_out, out = _apply(
        model, params, batch, drawn, temperature, dropout_key, deterministic
    )
    parts = wav2vec2_loss(
        projected,
        projected_q,
        quantizer_out.prob_perplexity,
        drawn["mask_indices"],
        drawn["negatives"],
        num_codevectors=model.head_config.num_codevectors,
        logit_temperature=model.head_config.contrastive_logits_temperature,
        diversity_weight=loss_cfg.contrastive.diversity_weight,
        features_pen=out.features_pen,
        features_pen_weight=loss_cfg.features_pen_weight,
    )
    count = jnp.maximum(parts["count"], 1.0)
    stats = {
        "loss_sum": parts["loss_sum"],
        "correct": parts["correct"],
        "count": parts["count"],
        "contrastive": parts["contrastive_sum"] / count,
        "diversity": parts["diversity"],
        "prob_perplexity": quantizer_out.prob_perplexity,
        "code_perplexity": quantizer_out.code_perplexity,
        "temperature": temperature,
        "features_pen": out.features_pen,
    }
    return parts["loss_sum"] / count, stats


def accumulated_loss_and_grads(
    model, loss_cfg, params, batch, mask_key, dropout_key, step, steps, mesh
):
    """(loss, stats), grads of the whole batch from `steps` micro-batches (the stats of
    `batch_loss` but `loss_sum`), equal to `batch_loss`'s up to float rounding when
    dropout is off (see the module docstring)."""
    head = model.head_config
    temperature = _temperature(loss_cfg, step)
    drawn = draws(model, loss_cfg, batch, mask_key, dropout_key)
    n_masked = jnp.maximum(drawn["mask_indices"].sum(), 1.0)
    features = model.config.conv_dim[-1]
    n_pen = jnp.maximum(audio_frame_mask(model.config, batch["audio_mask"]).sum() * features, 1.0)
    micro = micro_batches({**batch, **drawn}, steps, mesh)

    # Pass 1: the whole batch's codebook marginals, no Transformer and no gradient.
    def code_sums(mb, index):
        key = _quantizer_dropout_key(jax.random.fold_in(dropout_key, index))
        prob_sum, code_sum = model.apply(
            {"params": params},
            mb["audio"],
            mb["audio_mask"],
            mb["mask_indices"],
            deterministic=False,
            quantizer_dropout_rng=key,
            method=type(model).code_sums,
        )
        return {"prob": prob_sum, "code": code_sum}

    sums = scan_sum(code_sums, micro, steps)
    marginal = sums["prob"] / n_masked
    weight = loss_cfg.contrastive.diversity_weight

    def weighted_diversity(marginal):
        return weight * diversity_loss(marginal_perplexity(marginal), head.num_codevectors)

    # f(M) and f'(M): the diversity term's value and its gradient, fixed for pass 2.
    diversity_term, diversity_grad = jax.value_and_grad(weighted_diversity)(marginal)

    # Pass 2: each micro-batch's sums over frames, and its share of every gradient.
    def micro_loss(params, mb, key):
        projected, projected_q, quantizer_out, out = _apply(
            model, params, mb, mb, temperature, key, False
        )
        logits = contrastive_logits(
            projected, projected_q, mb["negatives"], head.contrastive_logits_temperature
        )
        parts = contrastive_loss(logits, mb["mask_indices"])
        # The encoder's penalty is a mean over this micro-batch's frames: back to a sum.
        pen_sum = out.features_pen * jnp.maximum(out.frame_mask.sum() * features, 1.0)
        value = parts["contrastive_sum"] / n_masked
        value = value + loss_cfg.features_pen_weight * pen_sum / n_pen
        # Its gradient is this micro-batch's share of d f(M); its value is no loss.
        linearised = jnp.vdot(diversity_grad, quantizer_out.prob_sum) / n_masked
        stats = {
            "value": value,
            "contrastive_sum": parts["contrastive_sum"],
            "correct": parts["correct"],
            "count": parts["count"],
            "pen_sum": pen_sum,
        }
        return value + linearised, stats

    def one(mb, index):
        key = jax.random.fold_in(dropout_key, index)
        (_, stats), grads = jax.value_and_grad(micro_loss, has_aux=True)(params, mb, key)
        return stats, grads

    stats, grads = scan_sum(one, micro, steps)
    loss = stats.pop("value") + diversity_term
    perplexity = marginal_perplexity(marginal)
    stats.update(
        contrastive=stats.pop("contrastive_sum") / n_masked,
        diversity=diversity_loss(perplexity, head.num_codevectors),
        prob_perplexity=perplexity,
        code_perplexity=marginal_perplexity(sums["code"] / n_masked),
        temperature=temperature,
        features_pen=stats.pop("pen_sum") / n_pen,
    )
    return (loss, stats), grads
