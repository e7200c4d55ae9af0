"""PLDC for a converted emotion model's own outputs: training speakers from a prepared run.

The published emotion models come without the training speakers PLDC retrieves from. A
run whose `prepare` stage is done has them: `reference_from_run` encodes that run's
training split with the emotion model and keeps, per training speaker, the mean of the
model's pooled vectors (its mean-pooled last hidden state: the space the model's head
reads, as a run's regressor retrieves in its fine-tuned space) and the mean and
population std of its labels, moved to the model's output scale (1..7 -> 0..1 by
(label - 1) / 6). Dimensions without labels in the data (dominance) get no calibration.

A new speaker is then enrolled as for a run (`enroll`): the mean pooled vector of the
enrollment recordings retrieves the `pldc_k` most similar training speakers (cosine), and
the profile stores the speaker's prediction mean and std next to the neighbours' label
statistics. The model has no speaker table, so the proxy speaker only names the nearest
training speaker.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from papt_jax import pldc
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.msp_podcast import LABEL_MAX, LABEL_MIN
from papt_jax.predict import profiles
from papt_jax.predict.assets import RunNotReadyError
from papt_jax.predict.profiles import Reference, SpeakerProfile

LABELLED = ("arousal", "valence")


@dataclasses.dataclass(frozen=True)
class EmotionReference:
    """The training speakers of a run, seen by an emotion model.

    Attributes:
      speakers: speaker ids (speakers.json order).
      references: {dimension: Reference} in the model's pooled space, labels on its scale.
      pldc_k: neighbours (the run's `evaluate.pldc_k`).
    """

    speakers: tuple[str, ...]
    references: dict[str, Reference]
    pldc_k: int


def _to_model_scale(labels: np.ndarray, label_range: tuple[float, float]) -> np.ndarray:
    low, high = label_range
    unit = (np.asarray(labels, np.float64) - LABEL_MIN) / (LABEL_MAX - LABEL_MIN)
    return (low + unit * (high - low)).astype(np.float32)


def reference_from_run(predictor, workdir: str | Path) -> EmotionReference:
    """Encodes a run's training split with `predictor`'s model (module docstring).

    Raises:
      RunNotReadyError: not a run folder, or its dataset is not prepared.
    """
    import ml_collections

    from papt_jax.data import msp_podcast
    from papt_jax.experiment.workspace import Workspace

    workdir = Path(workdir).absolute()
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise RunNotReadyError(f"{workdir} is not a papt_jax run folder (no config.json)")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    ws = Workspace(config, workdir)
    if not (ws.dataset_dir / "speakers.json").is_file():
        raise RunNotReadyError(
            f"{workdir}: the run's dataset is not prepared",
            hint="run its prepare stage first (--config.stages=corpus,prepare)",
        )
    speakers = tuple(msp_podcast.read_speakers(ws.dataset_dir / "speakers.json"))
    index = {s: i for i, s in enumerate(speakers)}
    batches, _ = ws.eval_batches("train")
    pooled, speaker, labels = [], [], {dim: [] for dim in LABELLED}
    for batch in batches():
        keep = np.asarray(batch["example_mask"], bool)
        _, vectors = predictor.run_batch(
            {"audio": batch["audio"], "audio_mask": batch["audio_mask"]}
        )
        pooled.append(vectors[: keep.size][keep])
        speaker += [index[str(s)] for s in np.asarray(batch["speaker_id"])[keep]]
        for dim in LABELLED:
            labels[dim].append(np.asarray(batch[dim])[keep])
    vectors = np.concatenate(pooled)
    speaker_index = np.asarray(speaker, np.int32)
    references = {
        dim: Reference.from_utterances(
            vectors,
            speaker_index,
            _to_model_scale(np.concatenate(labels[dim]), predictor.label_range),
        )
        for dim in LABELLED
        if dim in predictor.dimensions
    }
    return EmotionReference(speakers, references, int(config.evaluate.pldc_k))


def enroll(
    predictor,
    reference: EmotionReference,
    waveforms,
    name: str,
    *,
    min_seconds: float = profiles.MIN_ENROLL_SECONDS,
    progress=None,
):
    """A profile of a new speaker from prepared recordings (module docstring).

    Raises:
      EnrollmentError: fewer than 2 recordings or `min_seconds` of audio.
    """
    seconds = float(sum(len(x) for x in waveforms)) / SAMPLE_RATE
    profiles.check_enrollment(seconds, len(waveforms), name, min_seconds)
    preds, vectors = predictor.forward(waveforms, progress)
    dims = {}
    for dim, ref in reference.references.items():
        column = predictor.dimensions.index(dim)
        dims[dim] = profiles.dimension_stats(
            preds[:, column], vectors, ref, ref, reference.speakers, reference.pldc_k
        )
    first = next(iter(reference.references.values()))
    mean = pldc.speaker_means(vectors, np.zeros(len(vectors), np.int32), 1)
    nearest, _ = pldc.topk_neighbours(mean, first.vectors, 1)
    proxy = reference.speakers[int(first.speaker_index[int(np.asarray(nearest)[0, 0])])]
    return SpeakerProfile(
        name=name,
        kind="enrolled",
        speaker_id=proxy,
        model_id=predictor.model_id,
        pldc_k=reference.pldc_k,
        recordings=len(waveforms),
        seconds=seconds,
        dimensions=dims,
    )


def calibrate(predictor, preds: np.ndarray, profile: SpeakerProfile) -> dict[str, dict]:
    """{dimension: {'prediction', and for calibrated dimensions 'mu', 'sigma', 'both'}}."""
    if profile.model_id != predictor.model_id:
        raise profiles.ProfileError(
            f"profile {profile.name!r} was made with model {profile.model_id}, this model is "
            f"{predictor.model_id}",
            hint="enroll the speaker again with this model",
        )
    out = {}
    for column, dim in enumerate(predictor.dimensions):
        out[dim] = {"prediction": preds[:, column]}
        if dim in profile.dimensions:
            out[dim].update(profiles.calibrate(preds[:, column], profile.dimensions[dim]))
    return out
