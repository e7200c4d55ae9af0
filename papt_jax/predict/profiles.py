"""Speaker profiles: the PLDC statistics of one person, and how they calibrate predictions.

PLDC (`papt_jax.pldc`, paper §3.3) needs, per emotion dimension, the speaker's retrieved
training neighbours (their mean label mean `mu_bar` and mean label std `sigma_bar`) and the
mean `mu` and std `sigma` of the speaker's own predictions. A *profile* stores exactly these
numbers, computed once from a set of the speaker's recordings, together with the training
speaker whose embedding the fine-tuned model receives:

* a training speaker (`kind="training"`): its own embedding; neighbours retrieved with the
  fine-tuned model's pooled representations, as the evaluation does for test-b;
* a new speaker (`kind="enrolled"`): the proxy, the training speaker nearest (cosine of mean
  original-encoder representations) to the enrollment recordings; neighbours retrieved with
  the same original-encoder vectors, as the evaluation does for test-c.

Each prediction y is then mapped on its own (paper, Eq. 3):

    mu:    y - mu + mu_bar
    sigma: (y - mu) * sigma_bar / sigma + mu
    both:  (y - mu) * sigma_bar / sigma + mu_bar

with `sigma_bar / sigma` replaced by 1 when the profile's predictions were all equal
(`pldc.py`'s guard). Recordings whose prediction lies outside the label scale enter none of
a dimension's numbers (`Predictor.profile_from`; counted in `left_out`). Otherwise,
calibrating the profile's own recordings reproduces the evaluation.

File format (JSON, `SpeakerProfile.save`): see `SpeakerProfile` and the README. Numbers are
the float32 values written as decimals that read back to the same float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax import pldc, storage
from papt_jax.errors import UserError

PROFILE_FORMAT = "papt_jax.speaker_profile"
PROFILE_VERSION = 1
KINDS = ("training", "enrolled")
# Enrollment needs enough speech for a stable speaker vector and prediction spread: the
# smallest test-c speakers of the paper's protocol have a few utterances of a few seconds.
MIN_ENROLL_SECONDS = 10.0
MIN_ENROLL_RECORDINGS = 2


class ProfileError(UserError, ValueError):
    """A profile that cannot be read or does not belong to the model."""


class EnrollmentError(UserError, ValueError):
    """Enrollment audio that cannot make a profile (too little usable speech)."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """PLDC's training speakers for one retrieval space.

    Attributes:
      speaker_index: (Sr,) global speaker index (speakers.json order) of each speaker.
      vectors: (Sr, D) float32 mean pooled representation of each speaker's utterances.
      label_mean: (Sr,) float32 label mean per speaker (None for a space without labels).
      label_std: (Sr,) float32 population label std per speaker.
    """

    speaker_index: np.ndarray
    vectors: np.ndarray
    label_mean: np.ndarray | None = None
    label_std: np.ndarray | None = None

    @classmethod
    def from_utterances(
        cls, vectors: np.ndarray, speaker_index: np.ndarray, labels: np.ndarray | None = None
    ) -> Reference:
        """Speaker means (and label statistics) exactly as `pldc.pldc` computes them."""
        unique, dense = np.unique(np.asarray(speaker_index), return_inverse=True)
        dense = dense.astype(np.int32)
        means = np.asarray(pldc.speaker_means(np.asarray(vectors, np.float32), dense, len(unique)))
        mean = std = None
        if labels is not None:
            mean, std = (
                np.asarray(a)
                for a in pldc.label_stats(np.asarray(labels, np.float32), dense, len(unique))
            )
        return cls(unique.astype(np.int32), means, mean, std)

    def neighbours(self, speaker_vector: np.ndarray, k: int) -> np.ndarray:
        """(k,) positions in this reference of the most similar speakers, nearest first."""
        if not 1 <= k < len(self.speaker_index):
            raise ValueError(
                f"PLDC k={k} needs 1 <= k < {len(self.speaker_index)} training speakers"
            )
        idx, _ = pldc.topk_neighbours(np.asarray(speaker_vector)[None], self.vectors, k)
        return np.asarray(idx)[0]


@dataclasses.dataclass(frozen=True)
class DimensionStats:
    """A profile's PLDC numbers for one emotion dimension.

    Attributes:
      neighbours: retrieved training speaker ids, most similar first.
      mu_bar, sigma_bar: their mean label mean and mean label std.
      prediction_mean, prediction_std: mean and population std of the profile's predictions.
      constant: the profile's predictions were all equal (scale factor 1).
      left_out: recordings whose prediction lay outside the label scale and so entered none
        of these numbers (0 in profiles written before it was recorded).
    """

    neighbours: tuple[str, ...]
    mu_bar: float
    sigma_bar: float
    prediction_mean: float
    prediction_std: float
    constant: bool
    left_out: int = 0


@dataclasses.dataclass(frozen=True)
class SpeakerProfile:
    """One person's calibration profile (see the module docstring).

    Attributes:
      name: a label for reports (the enrollment folder's name, or the speaker id).
      kind: 'training' or 'enrolled'.
      speaker_id: the training speaker whose embedding the model receives (itself or the
        proxy).
      model_id: `Predictor.model_id` of the model it was made with (checked on use).
      pldc_k: neighbours retrieved.
      recordings: recordings it was computed from.
      seconds: their total duration.
      dimensions: {dimension: DimensionStats}.
    """

    name: str
    kind: str
    speaker_id: str
    model_id: str
    pldc_k: int
    recordings: int
    seconds: float
    dimensions: dict[str, DimensionStats]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ProfileError(f"profile kind must be one of {KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        """How the CSV names it."""
        if self.kind == "training":
            return f"training speaker {self.speaker_id}"
        return f"profile {self.name} (proxy: training speaker {self.speaker_id})"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, **out}
        for stats in out["dimensions"].values():
            stats["neighbours"] = list(stats["neighbours"])
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        storage.write_atomic(path, lambda f: f.write(text))  # never half a profile
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "profile") -> SpeakerProfile:
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"{source}: not a papt_jax speaker profile (no format field)")
        if data.get("version") != PROFILE_VERSION:
            raise ProfileError(
                f"{source}: profile version {data.get('version')!r}, this papt_jax reads "
                f"version {PROFILE_VERSION}"
            )
        try:
            dims = {
                name: _dimension_stats(stats, f"{source}: dimensions.{name}")
                for name, stats in data["dimensions"].items()
            }
            return cls(
                name=str(data["name"]),
                kind=str(data["kind"]),
                speaker_id=str(data["speaker_id"]),
                model_id=str(data["model_id"]),
                pldc_k=int(data["pldc_k"]),
                recordings=int(data["recordings"]),
                seconds=float(data["seconds"]),
                dimensions=dims,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, ProfileError):
                raise
            raise ProfileError(f"{source}: malformed profile ({type(e).__name__}: {e})") from e

    @classmethod
    def load(cls, path: str | Path) -> SpeakerProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProfileError(f"profile {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProfileError(f"profile {path} cannot be read: {e}") from e
        return cls.from_dict(data, str(path))


def _dimension_stats(stats: dict[str, Any], where: str) -> DimensionStats:
    numbers = {k: float(stats[k]) for k in ("mu_bar", "sigma_bar", "prediction_mean")}
    numbers["prediction_std"] = float(stats["prediction_std"])
    bad = [k for k, v in numbers.items() if not math.isfinite(v)]
    if bad:
        raise ProfileError(f"{where}: {bad[0]} is not a finite number")
    if numbers["sigma_bar"] < 0 or numbers["prediction_std"] < 0:
        raise ProfileError(f"{where}: a standard deviation is negative")
    constant = stats["constant"]
    if not isinstance(constant, bool):
        raise ProfileError(f"{where}: constant must be true or false")
    if not constant and numbers["prediction_std"] == 0:
        raise ProfileError(f"{where}: prediction_std is 0 but constant is false")
    left_out = stats.get("left_out", 0)
    if not isinstance(left_out, int) or isinstance(left_out, bool) or left_out < 0:
        raise ProfileError(f"{where}: left_out must be a count (an integer >= 0)")
    return DimensionStats(
        tuple(str(n) for n in stats["neighbours"]), constant=constant, left_out=left_out, **numbers
    )


def dimension_stats(
    predictions: np.ndarray,
    retrieval_vectors: np.ndarray,
    reference: Reference,
    label_reference: Reference,
    speakers: tuple[str, ...],
    k: int,
    left_out: int = 0,
) -> DimensionStats:
    """The PLDC numbers of one speaker's recordings for one dimension.

    Args:
      predictions: (N,) the model's predictions of the recordings.
      retrieval_vectors: (N, D) their vectors in `reference`'s space.
      reference: training speakers in the same space (fine-tuned or original encoder).
      label_reference: the dimension's training speakers with label statistics (same speakers
        as `reference`, same order).
      speakers: speaker ids in speakers.json order.
      k: neighbours.
      left_out: recordings the caller left out (predictions outside the label scale).
    """
    if not np.array_equal(reference.speaker_index, label_reference.speaker_index):
        raise ValueError("retrieval and label references list different training speakers")
    preds = jnp.asarray(predictions, jnp.float32)
    one = jnp.zeros(preds.shape, jnp.int32)
    vector = pldc.speaker_means(jnp.asarray(retrieval_vectors, jnp.float32), one, 1)[0]
    near = reference.neighbours(np.asarray(vector), k)
    mean, std = pldc.label_stats(preds, one, 1)
    label_mean = jnp.asarray(label_reference.label_mean)
    label_std = jnp.asarray(label_reference.label_std)
    return DimensionStats(
        neighbours=tuple(speakers[int(reference.speaker_index[j])] for j in near),
        # The same float32 reductions as pldc._calibrate_modes.
        mu_bar=float(label_mean[near[None]].mean(axis=1)[0]),
        sigma_bar=float(label_std[near[None]].mean(axis=1)[0]),
        prediction_mean=float(mean[0]),
        prediction_std=float(std[0]),
        constant=bool(jnp.max(preds) == jnp.min(preds)),
        left_out=int(left_out),
    )


def calibrate(predictions: np.ndarray, stats: DimensionStats) -> dict[str, np.ndarray]:
    """{mode: (N,) float32} for every PLDC mode, each prediction mapped on its own.

    Runs the float32 operations of `pldc._calibrate_modes` in the same order under `jax.jit`,
    so XLA fuses them as it does there (a multiply-add rounds once).
    """
    y = jnp.asarray(predictions, jnp.float32)
    numbers = [
        jnp.float32(v)
        for v in (stats.prediction_mean, stats.prediction_std, stats.mu_bar, stats.sigma_bar)
    ]
    out = _calibrate_jit(y, *numbers, jnp.bool_(stats.constant))
    return {mode: np.asarray(v) for mode, v in out.items()}


@jax.jit
def _calibrate_jit(preds, mu, sigma, mu_bar, sigma_bar, constant):
    safe_sigma = jnp.where(constant, 1.0, sigma)
    scale = jnp.where(constant, 1.0, sigma_bar / safe_sigma)
    centred = preds - mu
    return {"mu": centred + mu_bar, "sigma": centred * scale + mu, "both": centred * scale + mu_bar}


def check_enrollment(seconds: float, recordings: int, where: str, min_seconds: float) -> None:
    """Raises `EnrollmentError` when the usable audio is too little to enroll."""
    if recordings < MIN_ENROLL_RECORDINGS or seconds < min_seconds:
        raise EnrollmentError(
            f"{where}: {recordings} usable recording(s), {seconds:.1f} s of speech; enrollment "
            f"needs at least {MIN_ENROLL_RECORDINGS} recordings and {min_seconds:g} s in total",
            hint="add more recordings of the speaker (problems with files are listed above)",
        )
