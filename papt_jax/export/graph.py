"""The whole predictor as pure JAX functions: what `--format onnx` and `--format stablehlo` write.

`PredictorGraph.predict(weights, audio, audio_mask[, speaker])` runs every dimension's
regressor (feature extractor, encoder with its speaker fusion, mean pooling, head) on a
padded batch and returns, per row:

    <dim>          (batch,) float32   prediction on the output scale (label scaling undone)
    <dim>_pooled   (batch, D) float32 mean of the row's encoder frames (`f_p` pooled)
    frames         (batch,) int32     encoder frames of the row: (samples - 400) // 320 + 1

`PredictorGraph.head(weights, pooled)` maps `{<dim>_pooled: (n, D)}` to `{<dim>: (n,)}`: the
regression head alone, for a long recording whose windows were combined into one
frame-weighted mean (`papt_jax.predict.windows`), as `Predictor` does.

`weights` is a flat `{name: array}` (name `<dim>/<path in the variables>`): the StableHLO
export takes it as an argument (`weights.npz` beside it); the ONNX export bakes it in.

Speakers, as `Predictor` treats them: the speaker table gains one row, the mean embedding of
the training speakers (`average_row`, the plain output). The row is either an input
(`speaker`, (batch,) int32) or folded in as a constant (`speaker_row`). A model without speaker
fusion has neither.

Exports compute in float32 whatever dtype the run trained with (the checks compare float32).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.data.audio import RECEPTIVE_FIELD
from papt_jax.errors import UserError
from papt_jax.models.hubert import conv_output_lengths
from papt_jax.models.tasks import HubertForRegression
from papt_jax.predict.assets import RunAssets
from papt_jax.predict.predictor import with_average_speaker
from papt_jax.train.finetune import LabelScaling

AUDIO = "audio"
AUDIO_MASK = "audio_mask"
SPEAKER = "speaker"
FRAMES = "frames"


def symbolic_audio_shape():
    """The exports' (batch, samples) symbolic dimensions; samples >= 400 (one encoder frame)."""
    return jax.export.symbolic_shape(
        "batch, samples", constraints=(f"samples >= {RECEPTIVE_FIELD}",)
    )


def pooled_name(dimension: str) -> str:
    """Name of a dimension's pooled-representation output (and head input)."""
    return f"{dimension}_pooled"


@dataclasses.dataclass(frozen=True)
class _Regressor:
    """One dimension's model and where its variables lie in the flat weights."""

    model: HubertForRegression
    scaling: LabelScaling
    treedef: Any
    names: tuple[str, ...]

    def variables(self, weights: dict[str, Any]) -> dict:
        return jax.tree_util.tree_unflatten(self.treedef, [weights[n] for n in self.names])


def _path_name(path) -> str:
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


class PredictorGraph:
    """A run's regressors as functions of (weights, audio, audio_mask[, speaker]).

    Args:
      assets: the run or export (`papt_jax.predict.assets`).
      speaker_row: fold this speaker-table row in as a constant (None: `speaker` is an input
        when the model fuses speakers).

    Attributes:
      dimensions: the emotion dimensions, in output order.
      weights: flat {name: float32 array} of every regressor's variables.
      fuses_speakers: the model adds a speaker embedding.
      average_row: the average training speaker's row (None without speaker fusion).
      speaker_row: the folded row, or None.
      hidden_size: {dimension: D of its pooled output}.
    """

    def __init__(self, assets: RunAssets, speaker_row: int | None = None):
        configs = [r.encoder_config for r in assets.regressors.values()]
        first = configs[0]
        if any(
            (c.conv_kernel, c.conv_stride) != (first.conv_kernel, first.conv_stride)
            for c in configs
        ):
            raise ValueError("the regressors' feature extractors differ in their frame grid")
        self._conv = (first.conv_kernel, first.conv_stride)
        self.dimensions = tuple(assets.regressors)
        self.fuses_speakers = any(c.speaker_fusion != "none" for c in configs)
        self.average_row = None
        self.weights: dict[str, np.ndarray] = {}
        self.hidden_size: dict[str, int] = {}
        self._regressors: dict[str, _Regressor] = {}
        for dim, reg in assets.regressors.items():
            config, variables = reg.encoder_config, reg.variables
            if self.fuses_speakers:
                train = assets.references[dim].speaker_index
                variables, self.average_row = with_average_speaker(variables, train)
                config = config.replace(num_speakers=self.average_row + 1)
            config = config.replace(dtype="float32", remat=False)
            leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
            names = tuple(f"{dim}/{_path_name(path)}" for path, _ in leaves)
            for name, (_, leaf) in zip(names, leaves, strict=True):
                self.weights[name] = np.asarray(leaf, np.float32)
            scaling = LabelScaling(reg.label_scaling)
            self._regressors[dim] = _Regressor(HubertForRegression(config), scaling, treedef, names)
            self.hidden_size[dim] = config.hidden_size
        if speaker_row is not None and not self.fuses_speakers:
            raise UserError("this model has no speaker embedding: there is no speaker to fold in")
        if speaker_row is not None and not 0 <= speaker_row <= self.average_row:
            raise ValueError(f"speaker row {speaker_row} outside the table (0..{self.average_row})")
        self.speaker_row = speaker_row

    @property
    def speaker_input(self) -> bool:
        """The functions take a `speaker` argument (row per batch row)."""
        return self.fuses_speakers and self.speaker_row is None

    @property
    def input_names(self) -> tuple[str, ...]:
        return (AUDIO, AUDIO_MASK, SPEAKER) if self.speaker_input else (AUDIO, AUDIO_MASK)

    @property
    def output_names(self) -> tuple[str, ...]:
        """`predict`'s outputs in order: each dimension, each pooled, then frames."""
        return (*self.dimensions, *map(pooled_name, self.dimensions), FRAMES)

    def input_specs(self, batch, samples) -> list[jax.ShapeDtypeStruct]:
        """Shapes of `predict`'s array inputs (symbolic dimensions allowed)."""
        specs = [
            jax.ShapeDtypeStruct((batch, samples), jnp.float32),
            jax.ShapeDtypeStruct((batch, samples), jnp.bool_),
        ]
        if self.speaker_input:
            specs.append(jax.ShapeDtypeStruct((batch,), jnp.int32))
        return specs

    def frames(self, audio_mask: jax.Array) -> jax.Array:
        """(batch, samples) bool -> (batch,) int32 encoder frames of each row."""
        lengths = audio_mask.sum(-1).astype(jnp.int32)
        return conv_output_lengths(lengths, *self._conv)

    def predict(
        self, weights: dict[str, Any], audio: jax.Array, audio_mask: jax.Array, speaker=None
    ) -> dict[str, jax.Array]:
        """Every regressor on a padded batch (outputs: module docstring).

        Args:
          weights: `self.weights` (or the same names as arrays).
          audio: (batch, samples) float32 at 16 kHz, zero on padding.
          audio_mask: (batch, samples) bool, True on real samples.
          speaker: (batch,) int32 speaker-table rows, when `speaker_input`.
        """
        if self.speaker_input:
            rows = speaker
        elif self.fuses_speakers:
            rows = jnp.full(audio.shape[:1], self.speaker_row, jnp.int32)
        else:
            rows = None
        out = {}
        for dim, reg in self._regressors.items():
            preds, pooled = reg.model.apply(
                reg.variables(weights), audio, audio_mask, rows, train=False
            )
            out[dim] = reg.scaling.from_model(preds)
            out[pooled_name(dim)] = pooled
        out[FRAMES] = self.frames(audio_mask)
        return out

    def head(self, weights: dict[str, Any], pooled: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """{<dim>_pooled: (n, D)} -> {<dim>: (n,)}: each regression head on its own."""
        out = {}
        for dim, reg in self._regressors.items():
            preds = reg.model.apply(
                reg.variables(weights),
                pooled[pooled_name(dim)],
                method=lambda m, x: m.head(x, train=False),
            )
            out[dim] = reg.scaling.from_model(preds)
        return out
