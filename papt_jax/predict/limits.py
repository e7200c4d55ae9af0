"""What prediction refuses and what it flags: the shortest recording a model takes, and
predictions outside the label scale.

* **Minimum duration.** A model is never given a recording shorter than
  `MIN_DURATION_FRACTION` of its training split's shortest utterance: its pooled
  representation and its head saw nothing shorter, and a clip of a few frames pools too
  little speech for a meaningful prediction (a 25 ms clip gave arousal -9.3 on the 1..7
  scale). One half keeps every length of the training distribution's range (MSP-Podcast's
  segments are 2.75-11 s: recordings of 1.4 s and more are accepted). The evaluate stage
  records the shortest training utterance, and an export's manifest carries it; a model
  without that record takes `FALLBACK_MIN_SECONDS`.
* **Label scale.** A prediction outside LABEL_MIN..LABEL_MAX (1..7) is no score. It is kept
  and flagged (`outside_scale`), and it never enters a speaker's PLDC statistics.
"""

from __future__ import annotations

import numpy as np

from papt_jax.data.audio import RECEPTIVE_FIELD, SAMPLE_RATE, TooShortAudio
from papt_jax.data.msp_podcast import LABEL_MAX, LABEL_MIN

MIN_DURATION_FRACTION = 0.5
FALLBACK_MIN_SECONDS = 1.0
# The key of the flags in `Predictor.predict`'s output and the column of the CSV.
OUTSIDE_SCALE = "outside_scale"


def min_seconds(shortest_train_s: float | None) -> float:
    """The shortest recording a model trained on utterances of at least
    `shortest_train_s` seconds takes (None: not recorded)."""
    if shortest_train_s is None:
        return FALLBACK_MIN_SECONDS
    return max(MIN_DURATION_FRACTION * shortest_train_s, RECEPTIVE_FIELD / SAMPLE_RATE)


def min_seconds_basis(shortest_train_s: float | None) -> str:
    """Where `min_seconds` comes from, in words."""
    if shortest_train_s is None:
        return "the default for models that did not record their training data's durations"
    return f"{MIN_DURATION_FRACTION:g} x the shortest training utterance, {shortest_train_s:.2f} s"


def check_duration(samples: np.ndarray, name, shortest_train_s: float | None) -> None:
    """Raises `TooShortAudio` for a 16 kHz recording shorter than `min_seconds`.

    Args:
      samples: (samples,) at 16 kHz.
      name: how the refusal names it (a path, or 'waveform 3').
      shortest_train_s: the model's shortest training utterance in seconds, or None.
    """
    seconds = len(samples) / SAMPLE_RATE
    least = min_seconds(shortest_train_s)
    if seconds < least:
        raise TooShortAudio(
            name,
            f"{seconds:.3f} s; this model takes recordings of at least {least:.2f} s "
            f"({min_seconds_basis(shortest_train_s)})",
        )


def outside_scale(predictions: np.ndarray) -> np.ndarray:
    """(N,) bool: True where a prediction lies outside the label scale (or is not finite)."""
    y = np.asarray(predictions)
    return ~((y >= LABEL_MIN) & (y <= LABEL_MAX))
