"""`Predictor`: a finished run's regressors applied to new recordings, with PLDC per speaker.

    from papt_jax import Predictor
    p = Predictor.from_run("runs/demo")            # or Predictor.from_export("models/demo")
    out = p.predict(waveforms, sample_rate=16000)   # plain model output
    out = p.predict(waveforms, speaker="1234")      # a training speaker, calibrated
    profile = p.enroll(enrollment_waveforms, name="alice")
    out = p.predict(waveforms, profile=profile)     # a new speaker, calibrated

`predict` returns `{dimension: {variant: (N,) float32}}` with variant 'prediction' (the
model's output) and, with a speaker or profile, the PLDC variants 'mu', 'sigma', 'both';
and `{dimension: {'outside_scale': (N,) bool}}`, True where the model's output lies outside
the label scale (1..7): such a prediction is not a meaningful score, and it never enters a
speaker's PLDC statistics (a profile, or the `speaker=` set). `predict_windows` adds the
same values and flags for every window of every recording.

Recordings shorter than `Predictor.min_seconds` (half the training split's shortest
utterance, `limits.py`) are refused like other unusable audio (`TooShortAudio`): the model
never saw anything that short. No window of an accepted recording is shorter either: window
settings that could cut one are refused when the Predictor is made (`Predictor.__init__`).

Speakers, as the evaluation treats them (`papt_jax.eval.evaluate`):

* `speaker=ID` (a speaker of speakers.json): the model receives its embedding; the
  recordings of the call are that speaker's set: their mean fine-tuned representation
  retrieves the PLDC neighbours, their predictions give `mu` and `sigma` (test-b).
* `profile=`: a stored `SpeakerProfile` (its embedding and its PLDC numbers; `enroll`).
* neither: the plain output. A model with a speaker table then receives the mean embedding
  of the training speakers (the average training speaker), since it was never trained
  without one.

Recordings are cut into windows and batched by length buckets (`windows.py`). A recording
may be any (samples,) sequence that slices to float32 arrays: a NumPy array, or a
`stream.FileRecording` that reads each window from its file when it is batched.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.msp_podcast import LABEL_MAX, LABEL_MIN
from papt_jax.errors import UserError
from papt_jax.pldc import MODES
from papt_jax.predict import assets as assets_lib
from papt_jax.predict import limits, profiles
from papt_jax.predict.profiles import SpeakerProfile
from papt_jax.predict.waveforms import checked_model_inputs
from papt_jax.predict.windows import Batching, Window, combine, window_batches

PLAIN = "prediction"
VARIANTS = (PLAIN, *MODES)
OUTSIDE_SCALE = limits.OUTSIDE_SCALE

Progress = Callable[[float], None] | None


class UnknownSpeakerError(UserError, KeyError):
    """A speaker id that is not in the model's speaker table."""


class CalibrationError(UserError, ValueError):
    """A speaker's recordings that give no usable PLDC statistics."""


@dataclasses.dataclass(frozen=True)
class Windowed:
    """`Predictor.predict_windows`' result.

    Attributes:
      results: {dimension: {variant: (N,), 'outside_scale': (N,) bool}} per recording, as
        `predict` returns them.
      windows: one `windows.Window` per window (recording index `item`, first sample
        `start`, `length` samples, `frames`), recordings in order.
      window_results: {dimension: {variant: (num_windows,), 'outside_scale':
        (num_windows,) bool}}: each window's value (the head on its own pooled
        representation), calibrated as the recordings are, flagged outside the label scale.
    """

    results: dict[str, dict[str, np.ndarray]]
    windows: list[Window]
    window_results: dict[str, dict[str, np.ndarray]]


def _head_rows(n: int) -> int:
    """Rows the head runs on: the next power of two (few compiled shapes)."""
    return max(8, 1 << (n - 1).bit_length())


@functools.cache
def _regressor_steps(config, label_scaling: str, mesh):
    """Jitted (encoder step, head step) of a regressor architecture, shared by every Predictor
    in the process (a workdir and its export compile once)."""
    from papt_jax.models.tasks import HubertForRegression
    from papt_jax.train import finetune

    # Inference only: the head's dropout rate and CNN freezing play no part.
    model = HubertForRegression(config)
    scaling = finetune.LabelScaling(label_scaling)

    def head(variables, pooled):
        preds = model.apply(variables, pooled, method=lambda m, x: m.head(x, train=False))
        return scaling.from_model(preds)

    return finetune.make_predict_step(model, scaling, mesh), jax.jit(head)


@functools.cache
def _original_step(config, mesh):
    from papt_jax.eval.evaluate import make_encode_step
    from papt_jax.models.hubert import HubertModel

    return make_encode_step(HubertModel(config), mesh)


class _RegressorRuntime:
    """One regressor on the devices: the encoder step, the head step, and the speaker table."""

    def __init__(self, regressor: assets_lib.Regressor, train_speakers: np.ndarray, mesh):
        from papt_jax.train.sharding import replicate

        self.dimension = regressor.dimension
        self.fuses = regressor.encoder_config.speaker_fusion != "none"
        config = regressor.encoder_config
        variables = regressor.variables
        self.plain_index = 0
        if self.fuses:
            variables, self.plain_index = with_average_speaker(variables, train_speakers)
            config = config.replace(num_speakers=self.plain_index + 1)
        self.variables = replicate(variables, mesh)
        self.encode, self.head = _regressor_steps(config, regressor.label_scaling, mesh)


def _apply_head(rt: _RegressorRuntime, pooled: np.ndarray) -> np.ndarray:
    """(n, D) pooled representations -> (n,) float32 predictions (rows padded to few shapes)."""
    padded = np.zeros((_head_rows(len(pooled)), pooled.shape[1]), pooled.dtype)
    padded[: len(pooled)] = pooled
    return np.asarray(rt.head(rt.variables, padded))[: len(pooled)].astype(np.float32)


def with_average_speaker(variables: dict, train_speakers: np.ndarray) -> tuple[dict, int]:
    """Variables whose speaker table has one more row: the mean of the training speakers'."""
    params = dict(variables["params"])
    hubert = dict(params["hubert"])
    table = np.asarray(hubert["speaker_embedding"]["embedding"])
    mean = table[np.asarray(train_speakers)].mean(axis=0, dtype=np.float64).astype(table.dtype)
    hubert["speaker_embedding"] = {"embedding": np.concatenate([table, mean[None]])}
    params["hubert"] = hubert
    return {**variables, "params": params}, table.shape[0]


class Predictor:
    """A finished run's regressors for new recordings (see the module docstring).

    Args:
      assets: from `assets.from_workdir` / `assets.from_export`.
      window_seconds: longest window a recording is encoded in (`windows.py`).
      batch_seconds: padded audio per device batch.
      num_buckets: padded window lengths (compiled shapes per model).
      num_devices: devices to spread batches over (default 1).
      hop_seconds: None: windows tile each recording; else sliding windows starting every
        `hop_seconds` (`windows.sliding_windows`), for per-window values.
    """

    def __init__(
        self,
        assets: assets_lib.RunAssets,
        *,
        window_seconds: float = 20.0,
        batch_seconds: float = 80.0,
        num_buckets: int = 5,
        num_devices: int = 1,
        hop_seconds: float | None = None,
    ):
        from papt_jax.train.sharding import make_mesh

        self.assets = assets
        self.mesh = make_mesh(num_devices)
        self.batching = Batching(
            window_seconds, batch_seconds, num_buckets, self.mesh.size, hop_seconds
        )
        # No window may be shorter than a recording the model would refuse.
        self.batching.check_shortest(assets.min_seconds)

    @classmethod
    def from_run(cls, workdir: str | Path, **options) -> Predictor:
        """From a finished run's workdir (fine-tune and evaluate stages complete)."""
        return cls(assets_lib.from_workdir(workdir), **options)

    @classmethod
    def from_export(cls, directory: str | Path, **options) -> Predictor:
        """From a folder written by `python -m papt_jax.export`."""
        return cls(assets_lib.from_export(directory), **options)

    # --- facts ---------------------------------------------------------------------------

    @property
    def dimensions(self) -> tuple[str, ...]:
        return self.assets.dimensions

    @property
    def speakers(self) -> tuple[str, ...]:
        """Speaker ids the model has embeddings for."""
        return self.assets.speakers

    @property
    def pldc_k(self) -> int:
        return self.assets.pldc_k

    @property
    def model_id(self) -> str:
        return self.assets.model_id

    @property
    def min_seconds(self) -> float:
        """The shortest recording accepted (`assets.RunAssets.min_seconds`)."""
        return self.assets.min_seconds

    def check_duration(self, samples: np.ndarray, name) -> None:
        """Raises `TooShortAudio` for a 16 kHz recording shorter than `min_seconds`."""
        limits.check_duration(samples, name, self.assets.shortest_train_s)

    def speaker_index(self, speaker: str) -> int:
        """Row of `speaker` in the speaker table.

        Raises:
          UnknownSpeakerError: not a speaker of the run.
        """
        try:
            return self.speakers.index(str(speaker))
        except ValueError:
            shown = ", ".join(self.speakers[:10]) + (" ..." if len(self.speakers) > 10 else "")
            raise UnknownSpeakerError(
                f"speaker {speaker!r} is not one of the run's {len(self.speakers)} speakers",
                hint=f"known speakers: {shown}; enroll a new speaker instead",
            ) from None

    @functools.cached_property
    def _runtimes(self) -> dict[str, _RegressorRuntime]:
        return {
            dim: _RegressorRuntime(reg, self.assets.references[dim].speaker_index, self.mesh)
            for dim, reg in self.assets.regressors.items()
        }

    @functools.cached_property
    def _original_step(self):
        from papt_jax.train.sharding import replicate

        original = self.assets.original
        return _original_step(original.config, self.mesh), replicate(original.params, self.mesh)

    # --- model passes ----------------------------------------------------------------------

    def prepare(self, waveforms, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
        """User waveforms -> checked 16 kHz mono float32 (`waveforms.to_model_input`)."""
        return checked_model_inputs(waveforms, sample_rate, self.check_duration)

    def windows(self, waveforms: Sequence[np.ndarray]) -> list[Window]:
        """The windows of prepared recordings, in recording order (`windows.py`)."""
        return [w for i, x in enumerate(waveforms) for w in self.batching.windows(i, len(x))]

    def _pooled(
        self,
        waveforms: Sequence[np.ndarray],
        step,
        progress: Progress,
        speaker_index: int | None = None,
    ) -> np.ndarray:
        """(N, D) frame-weighted pooled representation of each recording (args as below)."""
        windows = self.windows(waveforms)
        pooled = self._window_pooled(waveforms, windows, step, progress, speaker_index)
        frames = np.asarray([w.frames for w in windows])
        items = np.asarray([w.item for w in windows])
        return combine(pooled, frames, items, len(waveforms))

    def _window_pooled(self, waveforms, windows, step, progress, speaker_index) -> np.ndarray:
        """(num_windows, D) pooled representation of each window.

        Args:
          waveforms: prepared recordings (each window is sliced from its recording when its
            batch is built, so a `FileRecording` is read one window at a time).
          windows: `self.windows(waveforms)`.
          step: sharded batch -> (rows, D) pooled windows.
          progress: called with each batch's audio seconds.
          speaker_index: the batch's `speaker` field for every row (None: no field).
        """
        from papt_jax.train.sharding import shard_batch

        pooled = None
        for batch in window_batches(waveforms, windows, self.batching):
            fields = {"audio": batch.audio, "audio_mask": batch.audio_mask}
            if speaker_index is not None:
                fields["speaker"] = np.full(batch.audio.shape[:1], speaker_index, np.int32)
            out = np.asarray(jax.device_get(step(shard_batch(fields, self.mesh))))
            if pooled is None:
                pooled = np.zeros((len(windows), out.shape[1]), out.dtype)
            pooled[batch.windows] = out[: batch.windows.size]
            if progress is not None:
                progress(batch.seconds)
        return pooled

    def forward(
        self, waveforms: Sequence[np.ndarray], speaker_index: int | None, progress: Progress = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Every regressor on prepared (16 kHz mono) recordings.

        Args:
          waveforms: (samples,) float32 arrays from `prepare`.
          speaker_index: speaker-table row the model receives; None: the average training
            speaker.
          progress: called with the audio seconds of each finished batch.

        Returns:
          {dimension: {'prediction': (N,) float32, 'pooled': (N, D) float32,
          'window_prediction': (num_windows,) float32 (windows in `self.windows` order)}}.
        """
        windows = self.windows(waveforms)
        frames = np.asarray([w.frames for w in windows])
        items = np.asarray([w.item for w in windows])
        out = {}
        for dim, rt in self._runtimes.items():
            index = rt.plain_index if speaker_index is None else int(speaker_index)

            def step(batch, rt=rt):
                return rt.encode(rt.variables, batch)[1]

            window_pooled = self._window_pooled(waveforms, windows, step, progress, index)
            pooled = combine(window_pooled, frames, items, len(waveforms))
            out[dim] = {
                PLAIN: _apply_head(rt, pooled),
                "pooled": pooled,
                "window_prediction": _apply_head(rt, window_pooled),
            }
        return out

    def encode_original(self, waveforms: Sequence[np.ndarray], progress: Progress = None):
        """(N, D0) pooled original-encoder representations (speaker retrieval for new speakers)."""
        step, params = self._original_step
        return self._pooled(waveforms, lambda batch: step(params, batch), progress)

    # --- speakers ----------------------------------------------------------------------------

    def profile_from(
        self,
        outputs: dict[str, dict[str, np.ndarray]],
        seconds: float,
        *,
        speaker: str | None = None,
        original_pooled: np.ndarray | None = None,
        name: str | None = None,
    ) -> SpeakerProfile:
        """A profile from `forward` outputs of one speaker's recordings.

        Args:
          outputs: `forward` of the recordings, with the speaker's (or proxy's) index.
          seconds: their total duration.
          speaker: a training speaker's id (retrieval with the fine-tuned vectors), or None
            for a new speaker (then `original_pooled` gives the retrieval vectors).
          original_pooled: (N, D0) `encode_original` of the recordings.
          name: the profile's label (default: the speaker id).
        """
        n = len(next(iter(outputs.values()))[PLAIN])
        dims = {}
        for dim, out in outputs.items():
            label_ref = self.assets.references[dim]
            if speaker is None:
                ref, vectors = self.assets.original.reference, original_pooled
            else:
                ref, vectors = label_ref, out["pooled"]
            # A prediction outside the label scale is no score: it would drag mu and sigma.
            used = ~limits.outside_scale(out[PLAIN])
            if not used.any():
                raise CalibrationError(
                    f"every {dim} prediction of the {n} recording(s) lies outside the label "
                    f"scale {LABEL_MIN:g}..{LABEL_MAX:g}: no calibration can be computed",
                    hint="give more (and longer) recordings of the speaker",
                )
            dims[dim] = profiles.dimension_stats(
                out[PLAIN][used],
                np.asarray(vectors)[used],
                ref,
                label_ref,
                self.speakers,
                self.pldc_k,
                left_out=int(n - used.sum()),
            )
        if speaker is None:
            proxy = self.proxy_speaker(original_pooled)
            kind = "enrolled"
        else:
            proxy, kind = str(speaker), "training"
        return SpeakerProfile(
            name=str(name if name is not None else proxy),
            kind=kind,
            speaker_id=proxy,
            model_id=self.model_id,
            pldc_k=self.pldc_k,
            recordings=int(n),
            seconds=float(seconds),
            dimensions=dims,
        )

    def proxy_speaker(self, original_pooled: np.ndarray) -> str:
        """The training speaker nearest to these recordings (`evaluate.proxy_speakers`' rule)."""
        from papt_jax import pldc

        ref = self.assets.original.reference
        vectors = np.asarray(original_pooled, np.float32)
        mean = pldc.speaker_means(vectors, np.zeros(len(vectors), np.int32), 1)
        nearest, _ = pldc.topk_neighbours(mean, ref.vectors, 1)
        return self.speakers[int(ref.speaker_index[int(np.asarray(nearest)[0, 0])])]

    def check_profile(self, profile: SpeakerProfile) -> None:
        """Raises `ProfileError` when `profile` was made with another model."""
        if profile.model_id != self.model_id:
            raise profiles.ProfileError(
                f"profile {profile.name!r} was made with model {profile.model_id}, this model "
                f"is {self.model_id}",
                hint="enroll the speaker again with this model",
            )
        missing = set(self.dimensions) - set(profile.dimensions)
        if missing:
            raise profiles.ProfileError(f"profile {profile.name!r} lacks {sorted(missing)}")
        self.speaker_index(profile.speaker_id)

    def enroll(
        self,
        waveforms,
        sample_rate: int = SAMPLE_RATE,
        *,
        speaker: str | None = None,
        name: str | None = None,
        min_seconds: float = profiles.MIN_ENROLL_SECONDS,
        progress: Progress = None,
    ) -> SpeakerProfile:
        """A profile from a speaker's recordings.

        Args:
          waveforms: the speaker's recordings (see `predict`).
          sample_rate: their rate.
          speaker: a training speaker's id; None enrolls a new speaker (proxy and neighbours
            from the original encoder, as test-c).
          name: the profile's label.
          min_seconds: least total duration accepted.
          progress: called with audio seconds as batches finish.

        Raises:
          EnrollmentError: fewer than 2 recordings or `min_seconds` of audio.
        """
        prepared = self.prepare(waveforms, sample_rate)
        return self.enroll_prepared(
            prepared, speaker=speaker, name=name, min_seconds=min_seconds, progress=progress
        )

    def enroll_prepared(
        self,
        prepared: Sequence[np.ndarray],
        *,
        speaker: str | None = None,
        name: str | None = None,
        min_seconds: float = profiles.MIN_ENROLL_SECONDS,
        where: str = "enrollment",
        progress: Progress = None,
    ) -> SpeakerProfile:
        """`enroll` on recordings already through `prepare`."""
        seconds = float(sum(len(x) for x in prepared)) / SAMPLE_RATE
        profiles.check_enrollment(seconds, len(prepared), where, min_seconds)
        if speaker is not None:
            outputs = self.forward(prepared, self.speaker_index(speaker), progress)
            return self.profile_from(outputs, seconds, speaker=str(speaker), name=name)
        original = self.encode_original(prepared, progress)
        proxy = self.proxy_speaker(original)
        outputs = self.forward(prepared, self.speaker_index(proxy), progress)
        return self.profile_from(outputs, seconds, original_pooled=original, name=name)

    # --- predictions ----------------------------------------------------------------------------

    def results(
        self, outputs: dict[str, dict[str, np.ndarray]], profile: SpeakerProfile | None
    ) -> dict[str, dict[str, np.ndarray]]:
        """{dimension: {variant: (N,), 'outside_scale': (N,) bool}} from `forward` outputs,
        calibrated by `profile`."""
        out = {}
        for dim, o in outputs.items():
            out[dim] = {PLAIN: o[PLAIN], OUTSIDE_SCALE: limits.outside_scale(o[PLAIN])}
            if profile is not None:
                out[dim].update(profiles.calibrate(o[PLAIN], profile.dimensions[dim]))
        return out

    def predict(
        self,
        waveforms,
        sample_rate: int = SAMPLE_RATE,
        *,
        speaker: str | None = None,
        profile: SpeakerProfile | str | Path | None = None,
        progress: Progress = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """Predictions for recordings, calibrated when a speaker or profile is given.

        Args:
          waveforms: a list of (samples,) or (samples, channels) float arrays in [-1, 1], or
            a (N, samples) array of equal-length mono recordings.
          sample_rate: their rate in Hz (other rates than 16 kHz are resampled).
          speaker: a training speaker's id: these recordings are its set (module docstring).
          profile: a `SpeakerProfile` or the path of a saved one.
          progress: called with audio seconds as batches finish.

        Returns:
          {dimension: {'prediction': (N,), and with a speaker 'mu', 'sigma', 'both': (N,);
          'outside_scale': (N,) bool}}.

        Raises:
          AudioError: an unusable waveform (named by its position), e.g. `TooShortAudio`
            below `min_seconds`.
          UnknownSpeakerError, ProfileError: a speaker or profile this model cannot use.
        """
        outputs, profile, _ = self._outputs(waveforms, sample_rate, speaker, profile, progress)
        return self.results(outputs, profile)

    def predict_windows(
        self,
        waveforms,
        sample_rate: int = SAMPLE_RATE,
        *,
        speaker: str | None = None,
        profile: SpeakerProfile | str | Path | None = None,
        progress: Progress = None,
    ) -> Windowed:
        """`predict`, plus the value of every window of every recording.

        Arguments as `predict`. Window values are calibrated with the same speaker statistics
        as the recordings' (with `speaker`, those of the recordings' predictions).

        Returns:
          A `Windowed`.
        """
        outputs, profile, prepared = self._outputs(
            waveforms, sample_rate, speaker, profile, progress
        )
        per_window = {dim: {PLAIN: o["window_prediction"]} for dim, o in outputs.items()}
        return Windowed(
            results=self.results(outputs, profile),
            windows=self.windows(prepared),
            window_results=self.results(per_window, profile),
        )

    def _outputs(self, waveforms, sample_rate, speaker, profile, progress):
        """(`forward` outputs, the profile that calibrates them, the prepared recordings)."""
        if speaker is not None and profile is not None:
            raise UserError("give either speaker or profile, not both")
        if profile is not None and not isinstance(profile, SpeakerProfile):
            profile = SpeakerProfile.load(profile)
        if profile is not None:
            self.check_profile(profile)
        prepared = self.prepare(waveforms, sample_rate)
        if speaker is not None:
            outputs = self.forward(prepared, self.speaker_index(speaker), progress)
            seconds = float(sum(len(x) for x in prepared)) / SAMPLE_RATE
            profile = self.profile_from(outputs, seconds, speaker=str(speaker))
        elif profile is not None:
            outputs = self.forward(prepared, self.speaker_index(profile.speaker_id), progress)
        else:
            outputs = self.forward(prepared, None, progress)
        return outputs, profile, prepared
