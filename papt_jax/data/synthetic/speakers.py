"""Synthetic speakers: voice traits, label distributions and per-utterance labels.

Every speaker has a mean and a standard deviation for arousal and valence that are linear
functions of the speaker's traits (see `LabelModel`), so speakers differ in label
distribution in a way that can be inferred from their voice. Each utterance draws its
arousal and valence from its speaker's distribution. Every random stream is keyed by the
seed, the speaker's role and its index in that role, so adding speakers of one role never
changes another role's voices or labels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from papt_jax.data.msp_podcast import LABEL_MAX, LABEL_MIN, UNKNOWN_SPEAKER
from papt_jax.data.synthetic.presets import CorpusPreset, LabelModel, TraitRanges

# Speaker roles -> split name in the CSV. "new" speakers exist only in the newer release;
# "hidden" speakers are real voices whose rows carry SpkrID "Unknown".
ROLE_SPLIT = {
    "train": "Train",
    "dev": "Development",
    "test": "Test1",
    "test2": "Test2",
    "new": "Test1",
    "hidden": "Train",
}
# Fixed integer per role, part of every random-stream key, so that adding speakers of
# one role never changes the audio or labels of another.
ROLE_CODE = {"train": 1, "dev": 2, "test": 3, "test2": 4, "new": 5, "hidden": 6}


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One synthetic voice.

    Attributes:
      number: Integer used in file names (and as SpkrID unless hidden).
      role: 'train', 'dev', 'test', 'test2', 'new' or 'hidden'.
      gender: 'Male' or 'Female'.
      traits: Voice traits, named as the `TraitRanges` fields (scalars).
      label_params: arousal_mean/std and valence_mean/std of the speaker.
    """

    number: int
    role: str
    gender: str
    traits: dict[str, float]
    label_params: dict[str, float]

    @property
    def spkr_id(self) -> str:
        return UNKNOWN_SPEAKER if self.role == "hidden" else str(self.number)


def _centred(value: float, bounds: tuple[float, float]) -> float:
    """Maps `value` from [lo, hi] linearly onto [-1, 1]."""
    lo, hi = bounds
    return 0.0 if hi == lo else 2.0 * (value - lo) / (hi - lo) - 1.0


def _draw_traits(rng: np.random.Generator, gender: str, ranges: TraitRanges) -> dict[str, float]:
    female = gender == "Female"

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    return {
        "f0_base_hz": uniform(ranges.f0_female_hz if female else ranges.f0_male_hz),
        "f0_range_st": uniform(ranges.f0_range_st),
        "vtl_scale": uniform(ranges.vtl_scale_female if female else ranges.vtl_scale_male),
        "expressiveness": uniform(ranges.expressiveness),
        "speaking_rate_sps": uniform(ranges.speaking_rate_sps),
        "loudness_db": uniform(ranges.loudness_db),
        "breathiness": uniform(ranges.breathiness),
        "tilt_offset": uniform(ranges.tilt_offset),
    }


def _label_params(
    rng: np.random.Generator, gender: str, traits: dict[str, float], preset: CorpusPreset
) -> dict[str, float]:
    model, ranges = preset.labels, preset.traits
    expr = 2.0 * traits["expressiveness"] - 1.0
    rate = _centred(traits["speaking_rate_sps"], ranges.speaking_rate_sps)
    f0_bounds = ranges.f0_female_hz if gender == "Female" else ranges.f0_male_hz
    pitch = _centred(traits["f0_base_hz"], f0_bounds)
    noise_a, noise_v = rng.normal(size=2)
    arousal_mean = (
        4.0 + model.arousal_expr * expr + model.arousal_rate * rate
    ) + model.arousal_mean_noise * noise_a
    valence_mean = (
        4.0 + model.valence_pitch * pitch + model.valence_expr * expr
    ) + model.valence_mean_noise * noise_v
    return {
        "arousal_mean": float(np.clip(arousal_mean, 1.5, 6.5)),
        "arousal_std": model.arousal_std_base + model.arousal_std_expr * traits["expressiveness"],
        "valence_mean": float(np.clip(valence_mean, 1.5, 6.5)),
        "valence_std": model.valence_std_base + model.valence_std_expr * traits["expressiveness"],
    }


def make_speakers(preset: CorpusPreset, seed: int) -> list[Speaker]:
    """Draws every speaker of the corpus; numbers are shuffled so they do not reveal roles."""
    roles = (
        ["train"] * preset.num_train_speakers
        + ["dev"] * preset.num_dev_speakers
        + ["test"] * preset.num_test_speakers
        + ["test2"] * preset.num_test2_speakers
        + ["new"] * preset.num_new_speakers
    )
    perm = np.random.default_rng([seed, 0]).permutation(len(roles)) + 1
    role_index: dict[str, int] = {}
    speakers = []
    for role, number in zip(roles, perm, strict=True):
        speakers.append(_make_speaker(preset, seed, role, role_index.get(role, 0), int(number)))
        role_index[role] = role_index.get(role, 0) + 1
    # Hidden voices share number 0 in file names; their rows say SpkrID "Unknown".
    for index in range(preset.num_hidden_speakers):
        speakers.append(_make_speaker(preset, seed, "hidden", index, 0))
    return speakers


def _make_speaker(preset: CorpusPreset, seed: int, role: str, index: int, number: int) -> Speaker:
    rng = np.random.default_rng([seed, ROLE_CODE[role], index, 1])
    gender = "Female" if rng.random() < 0.5 else "Male"
    traits = _draw_traits(rng, gender, preset.traits)
    return Speaker(number, role, gender, traits, _label_params(rng, gender, traits, preset))


def emo_class(arousal: float, valence: float) -> str:
    """Categorical label from the quadrant: Happy, Angry, Sad, or Neutral."""
    if arousal >= 4.5 and valence >= 4.5:
        return "H"
    if arousal >= 4.5 and valence < 3.5:
        return "A"
    if arousal < 3.5 and valence < 3.5:
        return "S"
    return "N"


def draw_labels(rng: np.random.Generator, speaker: Speaker, model: LabelModel) -> dict[str, float]:
    p = speaker.label_params
    a, v, d_noise = rng.normal(size=3)
    arousal = np.clip(p["arousal_mean"] + p["arousal_std"] * a, LABEL_MIN, LABEL_MAX)
    valence = np.clip(p["valence_mean"] + p["valence_std"] * v, LABEL_MIN, LABEL_MAX)
    dominance = 4.0 + model.dominance_from_arousal * (arousal - 4.0)
    dominance = np.clip(dominance + model.dominance_noise * d_noise, LABEL_MIN, LABEL_MAX)
    ndigits = model.label_decimals
    return {
        "arousal": round(float(arousal), ndigits),
        "valence": round(float(valence), ndigits),
        "dominance": round(float(dominance), ndigits),
    }
