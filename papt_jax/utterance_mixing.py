"""WavLM's utterance mixing (denoising masked speech modeling) as a jittable batch transform.

WavLM (Chen et al., 2022) trains HuBERT's masked prediction on inputs into which a
segment of another utterance of the batch (or of noise) has been mixed, while the
targets stay the primary utterance's pseudo-labels. The procedure and its values follow
the authors' implementation, which the first author points to for the details
(microsoft/unilm issue 652): microsoft/UniSpeech, `src/fairseq/data/audio/
utterance_mixing_dataset.py` (`mixing_collated_audios`) and `src/fairseq/tasks/
utterance_mixing_pretraining.py` (its options), as of commit 40d3227:

* each utterance is mixed with probability `mixing_prob` (the task's default 0.5, the
  dataset class's own default 0.2; see `MixingConfig.prob`);
* the segment length is drawn uniformly from the integers 0 .. T // 2, T being the
  (cropped, equal) length of the batch's utterances (`mixing_max_len = -1`: half);
* the segment starts uniformly anywhere in the secondary utterance that leaves room for
  it, and lands uniformly anywhere in the primary;
* it is scaled so that the energy ratio of the whole primary to the whole secondary
  utterance is r dB, r ~ U(-5, 5) for speech and U(-5, 20) for noise:
  `scale = sqrt(P_primary / (P_secondary * 10 ** (r / 10)))` with P the mean square;
  a silent secondary adds nothing;
* noise replaces speech with probability `mixing_noise_prob` (0.5 when noise is on;
  off by default: `mixing_noise = False`); the authors drew it from the DNS challenge set.

Differences, all for batches the authors' code never sees or for determinism:

* Utterances here are padded, not cropped to the batch's shortest, so "T" is the primary's
  own valid length, the segment is also at most the secondary's valid length, powers are
  taken over valid samples only, and padding rows neither mix nor get mixed in.
* The secondary is another utterance: the authors' code draws it from the whole batch,
  the primary itself included (probability 1/B), and from the batch as mixed so far
  (rows are mixed in place, in order); here it is always another row's clean audio.

Why jittable JAX and not NumPy in the input pipeline: the transform runs inside the
training step with a key folded from the step number, like the masks, so a resumed run
mixes exactly as an uninterrupted one without any host-side random state in the
checkpoint, and the same on any number of hosts (the partner gather crosses data shards;
XLA gathers the audio for it).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["MixingConfig", "MixingPlan", "apply_mixing", "draw_mixing_plan", "mix_utterances"]


@dataclasses.dataclass(frozen=True)
class MixingConfig:
    """How utterances are mixed (the values the authors' code uses by default).

    Attributes:
      prob: Probability that an utterance gets a segment mixed in. The authors' task
        config defaults to 0.5 and their dataset class to 0.2; the paper's text was not
        retrievable here, so the config states which it uses.
      max_fraction: The segment is at most this share of the primary's length (1/2).
      speech_ratio_db: Range of the primary-to-secondary energy ratio for speech, dB.
      noise_prob: Of the mixed utterances, the share mixed with noise (needs a noise
        bank); 0: speech only, the authors' default.
      noise_ratio_db: Range of the primary-to-noise energy ratio, dB.
    """

    prob: float
    max_fraction: float = 0.5
    speech_ratio_db: tuple[float, float] = (-5.0, 5.0)
    noise_prob: float = 0.0
    noise_ratio_db: tuple[float, float] = (-5.0, 20.0)

    def __post_init__(self):
        for name in ("prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        for name in ("speech_ratio_db", "noise_ratio_db"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{name} must be a finite (low, high), got {(low, high)}")


@struct.dataclass
class MixingPlan:
    """The random choices for one batch, one entry per row (all (batch,) arrays).

    Attributes:
      mixed: bool, the row gets a segment mixed in.
      use_noise: bool, the segment comes from the noise bank, not the batch.
      source: int32, the row of the batch (or of the noise bank) it comes from.
      length: int32, samples in the segment (0 is possible, as in the authors' code).
      source_start: int32, where the segment starts in the source.
      target_start: int32, where it lands in the primary.
      ratio_db: float32, primary-to-source energy ratio.
    """

    mixed: jax.Array
    use_noise: jax.Array
    source: jax.Array
    length: jax.Array
    source_start: jax.Array
    target_start: jax.Array
    ratio_db: jax.Array


def _randint_inclusive(key: jax.Array, high: jax.Array) -> jax.Array:
    """Uniform integers in [0, high] (high >= 0 per entry, traced)."""
    u = jax.random.uniform(key, high.shape)
    return jnp.minimum(jnp.floor(u * (high + 1).astype(jnp.float32)).astype(jnp.int32), high)


def _uniform_choice(key: jax.Array, candidates: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One uniformly chosen True column per row of `candidates` (rows, n).

    Returns the column (0 where a row has no candidate) and whether the row had one.
    """
    scores = jax.random.uniform(key, candidates.shape)
    scores = jnp.where(candidates, scores, -1.0)
    return jnp.argmax(scores, axis=1).astype(jnp.int32), candidates.any(axis=1)


def draw_mixing_plan(
    key: jax.Array,
    lengths: jax.Array,
    config: MixingConfig,
    noise_lengths: jax.Array | None = None,
) -> MixingPlan:
    """Draws which rows are mixed, with what, where and how loud.

    Args:
      key: PRNG key.
      lengths: (batch,) int valid samples of each row (0 for padding rows).
      config: The mixing settings.
      noise_lengths: (noises,) int valid samples of each clip of the noise bank, or None
        (then nothing is mixed with noise).

    Returns:
      A `MixingPlan`.
    """
    lengths = jnp.asarray(lengths, jnp.int32)
    batch = lengths.shape[0]
    keys = jax.random.split(key, 8)
    valid = lengths > 0
    mixed = valid & jax.random.bernoulli(keys[0], config.prob, (batch,))

    others = valid[None, :] & ~jnp.eye(batch, dtype=bool)
    partner, has_partner = _uniform_choice(keys[1], others)
    if noise_lengths is not None and config.noise_prob > 0:
        noise_ok = noise_lengths > 0
        noise_row, has_noise = _uniform_choice(
            keys[2], jnp.broadcast_to(noise_ok[None, :], (batch, noise_ok.shape[0]))
        )
        use_noise = has_noise & (
            jax.random.bernoulli(keys[3], config.noise_prob, (batch,)) | ~has_partner
        )
        source = jnp.where(use_noise, noise_row, partner)
        source_length = jnp.where(use_noise, noise_lengths[noise_row], lengths[partner])
    else:
        use_noise = jnp.zeros((batch,), bool)
        source = partner
        source_length = lengths[partner]
    mixed = mixed & (use_noise | has_partner)

    max_length = jnp.floor(lengths.astype(jnp.float32) * config.max_fraction).astype(jnp.int32)
    length = jnp.minimum(_randint_inclusive(keys[4], max_length), source_length)
    source_start = _randint_inclusive(keys[5], jnp.maximum(source_length - length, 0))
    target_start = _randint_inclusive(keys[6], jnp.maximum(lengths - length, 0))
    low_s, high_s = config.speech_ratio_db
    low_n, high_n = config.noise_ratio_db
    u = jax.random.uniform(keys[7], (batch,))
    ratio_db = jnp.where(use_noise, low_n + u * (high_n - low_n), low_s + u * (high_s - low_s))
    zero = jnp.zeros((batch,), jnp.int32)
    return MixingPlan(
        mixed=mixed,
        use_noise=use_noise & mixed,
        source=jnp.where(mixed, source, zero),
        length=jnp.where(mixed, length, zero),
        source_start=jnp.where(mixed, source_start, zero),
        target_start=jnp.where(mixed, target_start, zero),
        ratio_db=jnp.where(mixed, ratio_db, 0.0).astype(jnp.float32),
    )


def _power(audio: jax.Array, mask: jax.Array) -> jax.Array:
    """(rows, samples) -> (rows,) mean square over valid samples."""
    maskf = mask.astype(jnp.float32)
    return (audio.astype(jnp.float32) ** 2 * maskf).sum(-1) / jnp.maximum(maskf.sum(-1), 1.0)


def _segments(source: jax.Array, rows: jax.Array, start: jax.Array, offset: jax.Array):
    """source[rows[b], start[b] + offset[b, t]] with positions clipped into the row."""
    picked = source[rows]
    positions = jnp.clip(start[:, None] + offset, 0, source.shape[1] - 1)
    return jnp.take_along_axis(picked, positions, axis=1)


def apply_mixing(
    audio: jax.Array,
    audio_mask: jax.Array,
    plan: MixingPlan,
    noise: jax.Array | None = None,
    noise_mask: jax.Array | None = None,
) -> jax.Array:
    """Adds each planned segment, scaled to its energy ratio, to its primary row.

    Args:
      audio: (batch, samples) float32 waveforms, right-padded with zeros.
      audio_mask: (batch, samples) bool valid samples.
      plan: From `draw_mixing_plan` for these rows.
      noise: (noises, noise_samples) float32 noise bank, needed when the plan uses noise.
      noise_mask: (noises, noise_samples) bool valid samples of the bank.

    Returns:
      (batch, samples) float32 mixed waveforms; rows that are not mixed are unchanged.
    """
    audio = jnp.asarray(audio, jnp.float32)
    audio_mask = jnp.asarray(audio_mask, bool)
    offset = jnp.arange(audio.shape[1], dtype=jnp.int32)[None, :] - plan.target_start[:, None]
    inside = (offset >= 0) & (offset < plan.length[:, None]) & plan.mixed[:, None]
    powers = _power(audio, audio_mask)
    primary_power = powers
    segment = _segments(audio, plan.source, plan.source_start, offset)
    source_power = powers[plan.source]
    if noise is not None:
        noise_rows = jnp.clip(plan.source, 0, noise.shape[0] - 1)
        noise = jnp.asarray(noise, jnp.float32)
        noise_segment = _segments(noise, noise_rows, plan.source_start, offset)
        segment = jnp.where(plan.use_noise[:, None], noise_segment, segment)
        noise_power = _power(noise, noise_mask)[noise_rows]
        source_power = jnp.where(plan.use_noise, noise_power, source_power)
    # A silent source adds nothing (the authors' `scale = 0`); keep 0/0 out of the graph.
    audible = source_power > 0
    denominator = jnp.where(audible, source_power * 10.0 ** (plan.ratio_db / 10.0), 1.0)
    scale = jnp.where(audible, jnp.sqrt(primary_power / denominator), 0.0)
    return audio + jnp.where(inside, segment * scale[:, None], 0.0)


def mix_utterances(
    key: jax.Array,
    audio: jax.Array,
    audio_mask: jax.Array,
    config: MixingConfig,
    noise: jax.Array | None = None,
    noise_mask: jax.Array | None = None,
) -> jax.Array:
    """Draws a plan and applies it; with `config.prob == 0` returns `audio` itself.

    Args:
      key: PRNG key (fold the step in, so every step mixes differently).
      audio: (batch, samples) float32 waveforms, right-padded.
      audio_mask: (batch, samples) bool valid samples.
      config: The mixing settings.
      noise, noise_mask: Optional noise bank, (noises, noise_samples) each.

    Returns:
      (batch, samples) float32 waveforms.
    """
    if config.prob == 0:
        return audio
    lengths = jnp.asarray(audio_mask).sum(axis=1)
    noise_lengths = None if noise is None else jnp.asarray(noise_mask).sum(axis=1)
    plan = draw_mixing_plan(key, lengths, config, noise_lengths)
    return apply_mixing(audio, audio_mask, plan, noise, noise_mask)
