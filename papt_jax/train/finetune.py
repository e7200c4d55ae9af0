"""Fine-tuning steps for one emotion dimension (loss 1 - CCC) and batched prediction."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.msp_podcast import DIMENSIONS, LABEL_CENTRE, LABEL_MAX, LABEL_MIN
from papt_jax.losses import ccc_loss, weighted_ccc_loss
from papt_jax.models.config import HubertConfig
from papt_jax.models.tasks import HubertForRegression
from papt_jax.train.accumulate import micro_batches, two_pass_loss_and_grads
from papt_jax.train.loop import LoopConfig, train_in_workdir
from papt_jax.train.prediction import make_predict_step, speaker_ids, validation_ccc
from papt_jax.train.sharding import jit_train_step
from papt_jax.train.state import (
    TrainState,
    create_state,
    guarded_update,
    make_optimizer,
    make_schedule,
)


@dataclasses.dataclass(frozen=True)
class LabelScaling:
    """How labels are presented to the regressor (the paper does not say).

    'none' trains on raw 1..7 scores; 'unit' maps them to [0, 1] and predictions back.
    CCC is computed on the original scale either way.
    """

    mode: str = "none"

    def __post_init__(self):
        if self.mode not in ("none", "unit"):
            raise ValueError(f"label scaling must be 'none' or 'unit', got {self.mode!r}")

    def to_model(self, y):
        return y if self.mode == "none" else (y - LABEL_MIN) / (LABEL_MAX - LABEL_MIN)

    def from_model(self, y):
        return y if self.mode == "none" else y * (LABEL_MAX - LABEL_MIN) + LABEL_MIN


# The arrays the fine-tuning step reads; `training_batch` keeps these and the label.
_STEP_INPUTS = ("audio", "audio_mask", "example_mask", "speaker")


def training_batch(batch: dict, dimension: str) -> dict:
    """The part of a host batch the fine-tuning step reads, `dimension`'s labels as `label`.

    With one input layout for every dimension, arousal and valence trace the same program,
    so the second dimension finds the first one's compiled steps in the persistent
    compilation cache instead of compiling each batch shape again.

    Args:
      batch: A host batch (audio (B, T), audio_mask (B, T), example_mask (B,), speaker (B,),
        one (B,) label array per dimension, ...).
      dimension: The label to train on, e.g. 'arousal'.

    Returns:
      {audio, audio_mask, example_mask, speaker (when present), label (B,)}.
    """
    view = {key: batch[key] for key in _STEP_INPUTS if key in batch}
    view["label"] = batch[dimension]
    return view


def batch_loss(preds, labels, batch, speaker_weights=None):
    """1 - CCC over the real rows of `batch`, weighted per speaker when a table is given.

    Args:
      preds: (B,) predictions.
      labels: (B,) labels on the model's scale.
      batch: Holds `example_mask` (B,) and `speaker` (B,) int indices.
      speaker_weights: Optional (num_speakers,) weights; rows with speaker -1 weigh 1.
    """
    if speaker_weights is None:
        return ccc_loss(preds, labels, batch["example_mask"])
    speaker = batch["speaker"]
    weights = jnp.where(speaker >= 0, speaker_weights[jnp.maximum(speaker, 0)], 1.0)
    return weighted_ccc_loss(preds, labels, batch["example_mask"], weights)


def _train_forward(model, params, batch_stats, batch, dropout_key):
    """Training-mode predictions (B,) and the updated BatchNorm statistics."""
    (preds, _), updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        batch["audio"],
        batch["audio_mask"],
        speaker_ids(model, batch),
        train=True,
        example_mask=batch["example_mask"],
        rngs={"dropout": dropout_key},
        mutable=["batch_stats"],
    )
    return preds, updates["batch_stats"]


def make_train_step(
    model: HubertForRegression,
    scaling: LabelScaling,
    mesh: Mesh,
    speaker_weights: np.ndarray | None = None,
    accumulate_steps: int = 1,
    state_shardings=None,
):
    """Returns the jitted, state-donating fine-tuning step.

    The step reads the batch `training_batch` makes: its `label` (B,) is the dimension
    being trained, so one compiled program serves every dimension.

    Args:
      model: Encoder + regression head.
      scaling: Label scaling.
      mesh: Device mesh.
      speaker_weights: Optional (num_speakers,) loss weight of each speaker index (B2); the
        loss is then the weighted 1 - CCC. Rows with speaker index -1 weigh 1.
      accumulate_steps: Micro-batches per step (1: the batch in one pass; k > 1: the two
        passes of `accumulate.two_pass_loss_and_grads`, as 1 - CCC is a function of the
        whole batch); the rows must divide by accumulate_steps x devices.
      state_shardings: The state's shardings (`train.state.create_state`); None: replicated.
    """
    table = None if speaker_weights is None else jnp.asarray(speaker_weights, jnp.float32)

    def loss_of(preds, batch):
        return batch_loss(preds, scaling.to_model(batch["label"]), batch, table)

    def train_step(state: TrainState, batch, rng):
        dropout_key = jax.random.fold_in(rng, state.step)
        if accumulate_steps > 1:
            forward = functools.partial(_train_forward, model)
            micro = micro_batches(batch, accumulate_steps, mesh)
            (loss, batch_stats), grads = two_pass_loss_and_grads(
                forward, loss_of, state.params, state.batch_stats, micro, dropout_key
            )
        else:

            def loss_fn(params):
                preds, batch_stats = _train_forward(
                    model, params, state.batch_stats, batch, dropout_key
                )
                return loss_of(preds, batch), batch_stats

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state, grad_norm, finite = guarded_update(state, grads, loss, batch_stats=batch_stats)
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
        return new_state, metrics

    return jit_train_step(train_step, mesh, state_shardings)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _init_variables(model: HubertForRegression, rng, audio, mask, with_encoder: bool):
    speaker = jnp.zeros(audio.shape[:1], jnp.int32)
    variables = model.init(rng, audio, mask, speaker, train=False)
    if with_encoder:
        return variables
    # Without the encoder's outputs XLA drops its initialisers from the program; the
    # head draws from its own module path's keys, so it is the full init's head.
    params = {k: v for k, v in variables["params"].items() if k != "hubert"}
    return {**variables, "params": params}


def init_variables(model: HubertForRegression, rng: jax.Array, num_samples: int = SAMPLE_RATE):
    """Randomly initialised {'params', 'batch_stats'} of encoder + regression head."""
    audio = jnp.zeros((2, num_samples), jnp.float32)
    return _init_variables(model, rng, audio, jnp.ones_like(audio, bool), True)


def init_head_variables(model: HubertForRegression, rng: jax.Array, num_samples: int = SAMPLE_RATE):
    """`init_variables` without the encoder's params ('hubert'): for fine-tuning that
    brings its own. Each value equals `init_variables(model, rng)`'s; the encoder's
    initialisation is not compiled (a base model on 2 CPU cores: 0.8-0.9 s instead of
    3.0-3.4 s, measured by `python benchmarks/init_programs.py`)."""
    audio = jnp.zeros((2, num_samples), jnp.float32)
    return _init_variables(model, rng, audio, jnp.ones_like(audio, bool), False)


def centre_output_bias(head_params: dict, scaling: LabelScaling) -> dict:
    """Head parameters whose output bias starts at the centre of the label scale.

    1 - CCC penalises the squared gap between the prediction and label means as much as
    a lack of correlation. A zero-initialised bias is 4 points below the 1..7 labels, and
    Adam at the paper's 5e-5 moves it about 5e-5 per step, so thousands of steps would go
    to closing that gap instead of learning the covariance. Starting at the scale's centre
    removes the gap (the paper does not say how its head is initialised).
    """
    head = dict(head_params)
    output = dict(head["output"])
    output["bias"] = jnp.full_like(output["bias"], scaling.to_model(LABEL_CENTRE))
    head["output"] = output
    return head


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegressorConfig:
    """The fine-tuned model's settings: all that rebuilds it, no weights.

    Attributes:
      encoder_config: Architecture of the encoder (speaker fusion included).
      dimension: 'arousal' or 'valence'.
      label_scaling: 'none' or 'unit' (`LabelScaling`).
      head_dropout: Dropout of the regression head.
      freeze_feature_extractor: Keep the CNN fixed in training.
    """

    encoder_config: HubertConfig
    dimension: str
    label_scaling: str
    head_dropout: float
    freeze_feature_extractor: bool

    def __post_init__(self):
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"dimension must be one of {DIMENSIONS}, got {self.dimension!r}")
        LabelScaling(self.label_scaling)  # validates the mode

    def model(self) -> HubertForRegression:
        return HubertForRegression(
            self.encoder_config,
            head_dropout=self.head_dropout,
            freeze_feature_extractor=self.freeze_feature_extractor,
        )

    def scaling(self) -> LabelScaling:
        return LabelScaling(self.label_scaling)

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["encoder_config"] = self.encoder_config.to_dict()
        return json.dumps(values, indent=1)

    @classmethod
    def from_json(cls, text: str) -> RegressorConfig:
        values = json.loads(text)
        values["encoder_config"] = HubertConfig.from_dict(values["encoder_config"])
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneSettings:
    """Optimiser and loop settings of one fine-tuning run (no defaults: the config says).

    Attributes:
      epochs: Most passes over the training data.
      peak_lr: Adam learning rate (the paper: 5e-5).
      schedule: 'constant' or 'linear' (warm-up + decay).
      warmup_fraction: Warm-up share for 'linear'.
      clip_norm: Gradient clipping.
      patience: Evaluations without validation-CCC gain before stopping.
      speaker_weights: Loss weight per speaker index (length: the speaker index of
        speakers.json), for B2's weighted 1 - CCC; None trains unweighted.
      log_every: Steps between metric reads.
      stop_after_steps: Stop (resumable) at this step; 0 disables.
      checkpoint_every_minutes: Also save the latest checkpoint this often; 0 disables.
      seed: Head init and dropout seed.
      accumulate_steps: Micro-batches per optimiser step (`train.accumulate_steps`).
      param_sharding: 'replicated' or 'fsdp' (`train.param_sharding`).
    """

    epochs: int
    peak_lr: float
    schedule: str
    warmup_fraction: float
    clip_norm: float
    patience: int
    speaker_weights: tuple[float, ...] | None
    log_every: int
    stop_after_steps: int
    checkpoint_every_minutes: float
    seed: int
    accumulate_steps: int
    param_sharding: str

    def __post_init__(self):
        if self.speaker_weights is not None:
            w = np.asarray(self.speaker_weights, np.float64)
            if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("speaker_weights must be a non-empty list of finite weights >= 0")


def run_finetuning(
    model_config: RegressorConfig,
    run: FinetuneSettings,
    encoder_params: dict,
    train_data,
    eval_batches,
    mesh: Mesh,
    workdir: str,
):
    """Fine-tunes encoder + regression head with 1 - CCC and early stopping.

    Args:
      model_config: The model to train.
      run: Optimiser and loop settings.
      encoder_params: The encoder's initial weights (`HubertModel` parameters).
      train_data: A training `BatchPipeline`; its iterator state is checkpointed.
      eval_batches: Callable returning a fresh pass of validation batches.
      mesh: Device mesh.
      workdir: Checkpoints and logs go here.

    Returns:
      (LoopResult, best variables {'params', 'batch_stats'}) — None variables when
      stopped by `stop_after_steps`.
    """
    num_speakers = model_config.encoder_config.num_speakers
    if (
        run.speaker_weights is not None
        and num_speakers
        and len(run.speaker_weights) != num_speakers
    ):
        raise ValueError(
            f"speaker_weights has {len(run.speaker_weights)} entries but the encoder has "
            f"{num_speakers} speakers"
        )
    model = model_config.model()
    scaling = model_config.scaling()
    rng = jax.random.PRNGKey(run.seed)
    variables = init_head_variables(model, rng)
    params = dict(variables["params"])
    params["hubert"] = encoder_params
    params["head"] = centre_output_bias(variables["params"]["head"], scaling)
    steps_per_epoch = train_data.batches_per_epoch
    total_steps = run.epochs * steps_per_epoch
    frozen = ("hubert/feature_extractor",) if model_config.freeze_feature_extractor else ()
    tx = make_optimizer(
        run.peak_lr,
        total_steps,
        run.warmup_fraction,
        clip_norm=run.clip_norm,
        schedule=run.schedule,
        params=params,
        frozen_prefixes=frozen,
    )
    state, shardings = create_state(
        params, tx, mesh, run.param_sharding, batch_stats=variables["batch_stats"]
    )
    weights = None if run.speaker_weights is None else np.asarray(run.speaker_weights)
    dimension = model_config.dimension
    train_step = make_train_step(
        model, scaling, mesh, weights, run.accumulate_steps, state_shardings=shardings
    )
    variables_shardings = {"params": shardings.params, "batch_stats": shardings.batch_stats}
    predict_step = make_predict_step(model, scaling, mesh, variables_shardings)
    loop_cfg = LoopConfig(
        total_steps=total_steps,
        eval_every=steps_per_epoch,
        log_every=min(run.log_every, steps_per_epoch),
        best_metric="ccc",
        best_mode="max",
        patience=run.patience,
        stop_after_steps=run.stop_after_steps or None,
        checkpoint_every_minutes=run.checkpoint_every_minutes,
    )

    def evaluate(state):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return validation_ccc(predict_step, variables, eval_batches(), mesh, dimension)

    result, best = train_in_workdir(
        state=state,
        train_step=train_step,
        evaluate=evaluate,
        train_data=train_data,
        mesh=mesh,
        rng=rng,
        workdir=workdir,
        config=loop_cfg,
        description=f"finetune[{dimension}]",
        learning_rate=make_schedule(run.peak_lr, total_steps, run.warmup_fraction, run.schedule),
        batch_view=functools.partial(training_batch, dimension=dimension),
    )
    if best is None:
        return result, None
    return result, {"params": best.params, "batch_stats": best.batch_stats}
