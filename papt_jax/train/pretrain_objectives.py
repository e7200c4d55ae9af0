"""The objectives pre-training trains with, one forward function each.

* `masked_prediction`: HuBERT's loss on k-means pseudo-labels (HuBERT, data2vec-audio,
  WavLM); with a `MixingConfig`, WavLM's utterance mixing is applied to the training
  inputs first (`papt_jax.utterance_mixing`), the targets staying the primary's.
* `contrastive`: wav2vec 2.0's loss against its Gumbel-quantized CNN features
  (`papt_jax.contrastive`; the batch's draws and sums in `train.contrastive_objective`).

Both forward functions take `(params, batch, mask_key, dropout_key, step, deterministic)` and return
`(loss, stats)` with at least `loss_sum`, `correct` and `count` (the validation sums).
"""

from __future__ import annotations

import dataclasses
import logging

import jax

from papt_jax.train import contrastive_objective
from papt_jax.train import masked_prediction as masked_prediction_lib
from papt_jax.utterance_mixing import MixingConfig, mix_utterances

log = logging.getLogger(__name__)

# The objectives a step can train (`experiment.objectives` picks one per family).
OBJECTIVES = ("masked_prediction", "contrastive")
# A second key stream for the mixing plan, so that the mask and dropout keys are those
# of a step without mixing (HuBERT's step is then repeated exactly).
_MIXING_STREAM = 0x6D6978


@dataclasses.dataclass(frozen=True)
class ContrastiveSettings:
    """wav2vec 2.0's loss settings (fairseq's defaults in `contrastive.FAIRSEQ_WAV2VEC2_*`).

    Attributes:
      num_negatives: K negatives per masked frame (100).
      diversity_weight: Weight of the codebook-diversity loss (0.1).
      temperature: fairseq's `latent_temp` (max, min, decay) Gumbel schedule.
      step_offset: Updates the checkpoint has already made: the temperature at step s is
        the schedule's value at `step_offset + s` (0: the schedule starts over).
    """

    num_negatives: int
    diversity_weight: float
    temperature: tuple[float, float, float]
    step_offset: int = 0


@dataclasses.dataclass(frozen=True)
class PretrainLossConfig:
    """The objective, masking and loss weights (the config's `pretrain.*` values; fairseq's
    HuBERT base and large recipes both use mask_prob 0.8, span 10 and a feature penalty
    weight of 10; its wav2vec 2.0 recipes mask_prob 0.65).

    Attributes:
      mask_prob: Share of frames chosen as span starts times span length.
      mask_length: Frames per masked span.
      features_pen_weight: Weight of the CNN-feature penalty.
      min_masks: Fewest spans per utterance (fairseq: 2).
      nomask_weight: Weight of the masked-prediction loss on unmasked frames (HuBERT: 0).
      objective: 'masked_prediction' or 'contrastive'.
      mixing: WavLM's utterance mixing of the training inputs, or None.
      contrastive: The contrastive loss's settings (needed by that objective).
    """

    mask_prob: float
    mask_length: int
    features_pen_weight: float
    min_masks: int = 2
    nomask_weight: float = 0.0
    objective: str = "masked_prediction"
    mixing: MixingConfig | None = None
    contrastive: ContrastiveSettings | None = None

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "contrastive" and self.contrastive is None:
            raise ValueError("the contrastive objective needs its ContrastiveSettings")


def mixed_batch(batch, loss_cfg: PretrainLossConfig, rng: jax.Array, step: jax.Array, noise=None):
    """The training batch with WavLM's utterance mixing applied (itself when off).

    The plan's key is folded from `rng` and the step on its own stream, so a resumed run
    mixes as an uninterrupted one and the mask and dropout keys are unchanged.

    Args:
      batch: The training batch.
      loss_cfg: Its `mixing` settings (None: no mixing).
      rng: The run's key.
      step: The update count.
      noise: None, or the noise bank `(noise, noise_mask)`, both (noises, noise_samples),
        that `loss_cfg.mixing.noise_prob` of the mixed rows draw from.
    """
    if loss_cfg.mixing is None or loss_cfg.mixing.prob == 0:
        return batch
    key = jax.random.fold_in(jax.random.fold_in(rng, _MIXING_STREAM), step)
    bank, bank_mask = (None, None) if noise is None else noise
    audio = mix_utterances(
        key, batch["audio"], batch["audio_mask"], loss_cfg.mixing, bank, bank_mask
    )
    return {**batch, "audio": audio.astype(batch["audio"].dtype)}


def masked_prediction(model, loss_cfg, params, batch, mask_key, dropout_key, step, deterministic):
    """HuBERT's loss (mean over masked frames) + the feature penalty; `step` is unused."""
    del step
    return masked_prediction_lib.batch_loss(
        model, loss_cfg, params, batch, mask_key, dropout_key, deterministic
    )


def accumulated_masked_prediction(
    model, loss_cfg, params, batch, mask_key, dropout_key, step, steps, mesh
):
    """`masked_prediction`'s loss and gradient from `steps` micro-batches."""
    del step
    return masked_prediction_lib.accumulated_loss_and_grads(
        model, loss_cfg, params, batch, mask_key, dropout_key, steps, mesh
    )


FORWARD = {"masked_prediction": masked_prediction, "contrastive": contrastive_objective.batch_loss}
# The same losses and their gradients from k micro-batches (`train.accumulate_steps`):
# `(model, loss_cfg, params, batch, mask_key, dropout_key, step, k, mesh) -> ((loss,
# stats), grads)`, equal to one batch of all the rows.
ACCUMULATED = {
    "masked_prediction": accumulated_masked_prediction,
    "contrastive": contrastive_objective.accumulated_loss_and_grads,
}
# Training metrics each objective logs beside loss, accuracy, grad_norm and finite.
LOGGED = {
    "masked_prediction": ("features_pen",),
    "contrastive": (
        "contrastive",
        "diversity",
        "prob_perplexity",
        "code_perplexity",
        "temperature",
        "features_pen",
    ),
}


class CodebookWatch:
    """Warns when the quantizer's codebook collapses: the argmax codes of the logged
    steps use about one entry per group (`code_perplexity` below 1.5 per group, out of
    V). Warns once per collapse, again after a recovery.
    """

    def __init__(self, groups: int, description: str):
        self.groups = groups
        self.description = description
        self.collapsed = False

    def __call__(self, step: int, means: dict[str, float]) -> None:
        if "code_perplexity" not in means:
            return
        per_group = means["code_perplexity"] / self.groups
        collapsed = per_group < 1.5
        if collapsed and not self.collapsed:
            log.warning(
                "%s step %d: the quantizer's codebook has collapsed: code perplexity %.3g per "
                "group (1 = a single entry used); the contrastive targets carry almost no "
                "information. Lower the learning rate, or raise the diversity weight "
                "(--config.pretrain.diversity_weight)",
                self.description,
                step,
                per_group,
            )
        self.collapsed = collapsed
