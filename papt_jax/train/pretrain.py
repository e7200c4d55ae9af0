"""Pre-training steps and run (HuBERT, TAPT and PAPT; every family's own objective).

`train_step(state, batch, rng) -> (state, metrics)` is a pure function, jitted once
per batch shape with the state donated. Masks, negatives, Gumbel noise and utterance
mixing are drawn inside the step from `fold_in(rng, step)`, so a resumed run draws the
same as an uninterrupted one. The objectives themselves are in `pretrain_objectives`.

With `accumulate_steps = k` the step takes k micro-batches, drawn for as one batch, and
makes the update of that one batch (`train.masked_prediction`,
`train.contrastive_objective`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.models.config import HubertConfig
from papt_jax.models.heads import PretrainHeadConfig
from papt_jax.models.quantizer import QuantizerHeadConfig
from papt_jax.models.tasks import EncoderForContrastive, HubertForPretraining
from papt_jax.train.loop import LoopConfig, train_in_workdir
from papt_jax.train.masked_prediction import frame_mask_of
from papt_jax.train.pretrain_objectives import (
    ACCUMULATED,
    FORWARD,
    LOGGED,
    CodebookWatch,
    ContrastiveSettings,
    PretrainLossConfig,
    mixed_batch,
)
from papt_jax.train.sharding import (
    data_sharded,
    jit_train_step,
    replicated,
    shard_batch,
)
from papt_jax.train.state import (
    TrainState,
    create_state,
    guarded_update,
    make_optimizer,
    make_schedule,
)

__all__ = [
    "ContrastiveSettings",
    "PretrainLossConfig",
    "PretrainModelConfig",
    "PretrainSettings",
    "build_model",
    "choose_head",
    "choose_quantizer",
    "frame_mask_of",
    "make_eval_step",
    "make_train_step",
    "run_pretraining",
]

log = logging.getLogger(__name__)


def make_train_step(
    model,
    loss_cfg: PretrainLossConfig,
    mesh: Mesh,
    accumulate_steps: int = 1,
    state_shardings=None,
    noise=None,
):
    """Returns the jitted, state-donating pre-training step of `loss_cfg.objective`.

    Args:
      model: `HubertForPretraining` (masked prediction) or `EncoderForContrastive`.
      loss_cfg: The objective and its settings.
      mesh: Device mesh.
      accumulate_steps: Micro-batches per step (1: the batch in one pass); the batch's
        rows must divide by accumulate_steps x devices. Either objective: the update is
        that of one batch of all the rows.
      state_shardings: The state's shardings (`train.state.create_state`); None:
        replicated.
      noise: None, or WavLM's noise bank `(noise, noise_mask)` as NumPy arrays, both
        (noises, noise_samples): held on every device for the run and mixed in as
        `loss_cfg.mixing` says.
    """
    forward = FORWARD[loss_cfg.objective]
    accumulated = ACCUMULATED[loss_cfg.objective]
    logged = LOGGED[loss_cfg.objective]

    def train_step(state: TrainState, batch, rng, noise=None):
        mask_key, dropout_key = jax.random.split(jax.random.fold_in(rng, state.step))
        batch = mixed_batch(batch, loss_cfg, rng, state.step, noise)
        if accumulate_steps > 1:
            (loss, stats), grads = accumulated(
                model,
                loss_cfg,
                state.params,
                batch,
                mask_key,
                dropout_key,
                state.step,
                accumulate_steps,
                mesh,
            )
        else:

            def loss_fn(params):
                return forward(
                    model, loss_cfg, params, batch, mask_key, dropout_key, state.step, False
                )

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state, grad_norm, finite = guarded_update(state, grads, loss)
        metrics = {
            "loss": loss,
            "accuracy": stats["correct"] / jnp.maximum(stats["count"], 1.0),
            **{k: stats[k] for k in logged},
            "grad_norm": grad_norm,
            "finite": finite,
        }
        return new_state, metrics

    return jit_train_step(train_step, mesh, state_shardings, noise)


def make_eval_step(model, loss_cfg: PretrainLossConfig, mesh: Mesh, params_shardings=None):
    """Returns a jitted `(params, batch, key) -> sums` for validation loss and accuracy
    (no mixing, no dropout; the contrastive objective takes the argmax codes).

    `params_shardings` is where the params live (the train state's); None: replicated.
    """
    forward = FORWARD[loss_cfg.objective]

    def eval_step(params, batch, key):
        _, stats = forward(model, loss_cfg, params, batch, key, key, jnp.int32(0), True)
        return {k: stats[k] for k in ("loss_sum", "correct", "count")}

    params = replicated(mesh) if params_shardings is None else params_shardings
    return jax.jit(
        eval_step,
        in_shardings=(params, data_sharded(mesh), replicated(mesh)),
        out_shardings=replicated(mesh),
    )


@functools.partial(jax.jit, static_argnums=(0, 4))
def _init_params(model, rng, audio, mask, with_encoder: bool):
    speaker = jnp.zeros(audio.shape[:1], jnp.int32)
    frames = model.config.num_frames(audio.shape[1])
    params = model.init(rng, audio, mask, speaker, jnp.zeros((audio.shape[0], frames), bool))
    params = params["params"]
    # Without the encoder's outputs XLA drops its initialisers from the program; the
    # rest draw from their own module paths' keys, so they are the full init's values.
    return params if with_encoder else {k: v for k, v in params.items() if k != "hubert"}


def init_params(model, rng: jax.Array, num_samples: int = SAMPLE_RATE):
    """Randomly initialised parameters of encoder + head."""
    audio = jnp.zeros((1, num_samples), jnp.float32)
    return _init_params(model, rng, audio, jnp.ones_like(audio, bool), True)


def init_head_params(model, rng: jax.Array, num_samples: int = SAMPLE_RATE):
    """`init_params` without the encoder ('hubert'): for training that brings its own.

    Each value equals `init_params(model, rng)`'s; the encoder's initialisation is not
    compiled (a base model on 2 CPU cores: 0.6-0.7 s instead of 3.1-3.5 s, measured by
    `python benchmarks/init_programs.py`).
    """
    audio = jnp.zeros((1, num_samples), jnp.float32)
    return _init_params(model, rng, audio, jnp.ones_like(audio, bool), False)


def choose_head(
    head_config: PretrainHeadConfig | None, head_params, num_clusters: int, final_dim: int
) -> tuple[PretrainHeadConfig, dict | None]:
    """Reuses a checkpoint's head when it fits the labels, else asks for a fresh one.

    A fairseq head scores fairseq's own cluster ids; it is reused only when the
    pseudo-labels have as many clusters (they should come from the same k-means).

    Returns:
      The head config and its params, or None params for a randomly initialised head.
    """
    if head_config is not None and head_params is not None:
        if head_config.num_clusters == num_clusters:
            log.info(
                "reusing the checkpoint's pre-training head (%d rows, label offset %d)",
                head_config.num_label_rows,
                head_config.label_offset,
            )
            return head_config, head_params
        log.warning(
            "the checkpoint's head has %d clusters but the pseudo-labels have %d: "
            "creating a new head",
            head_config.num_clusters,
            num_clusters,
        )
    else:
        log.info("the initial checkpoint has no pre-training head: creating one")
    return fresh_head(num_clusters, final_dim)


def fresh_head(num_clusters: int, final_dim: int) -> tuple[PretrainHeadConfig, None]:
    """The config of a randomly initialised head for `num_clusters` labels (no params)."""
    return PretrainHeadConfig(final_dim=final_dim, num_label_rows=num_clusters), None


def choose_quantizer(
    head_config: QuantizerHeadConfig | None, head_params, fresh: QuantizerHeadConfig
) -> tuple[QuantizerHeadConfig, dict | None]:
    """The checkpoint's wav2vec 2.0 head when it has one (continued pre-training starts
    from its quantizer), else `fresh` with None params (randomly initialised)."""
    if head_config is not None and head_params is not None:
        log.info(
            "continuing from the checkpoint's quantizer (%d x %d codevectors, projected to %d)",
            head_config.num_codevector_groups,
            head_config.num_codevectors_per_group,
            head_config.proj_codevector_dim,
        )
        return head_config, head_params
    log.info(
        "the initial checkpoint has no quantizer: creating one (%d x %d codevectors)",
        fresh.num_codevector_groups,
        fresh.num_codevectors_per_group,
    )
    return fresh, None


def evaluate_loss(eval_step, params, batches, mesh, seed: int = 0) -> dict[str, float]:
    """Masked-prediction loss and accuracy over every batch (fixed masks per batch index)."""
    totals = []
    base = jax.random.PRNGKey(seed + 1_000_003)
    for i, batch in enumerate(batches):
        totals.append(eval_step(params, shard_batch(batch, mesh), jax.random.fold_in(base, i)))
    if not totals:
        raise ValueError("the pre-training validation split has no batches")
    sums = jax.device_get(jax.tree.map(lambda *xs: sum(xs), *totals))
    count = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count}


# fairseq's HuBERT pre-training recipe, examples/hubert/config/pretrain/hubert_large_librivox.yaml
# (facebookresearch/fairseq): `optimizer: adam` with `adam_betas: (0.9,0.98)`, `adam_eps: 1e-06`,
# `weight_decay: 0.01` (fairseq's Adam decays decoupled, like AdamW), `optimization.clip_norm:
# 1.0`, and `lr_scheduler: polynomial_decay` (power 1, end 0: linear warm-up then linear decay).
# hubert_base_librispeech.yaml has the same Adam settings but `clip_norm: 10.0`. The paper (PAPT)
# keeps "all other settings identical to HuBERT's pre-training configurations". One difference
# from fairseq remains: its Adam adds eps to sqrt(v) before bias correction, we (as
# torch.optim.AdamW and optax) after it; this matters only while sqrt(v_hat) is near 1e-6.
FAIRSEQ_HUBERT_LARGE_ADAM = {
    "adam_b1": 0.9,
    "adam_b2": 0.98,
    "adam_eps": 1e-6,
    "weight_decay": 0.01,
    "clip_norm": 1.0,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainModelConfig:
    """The model pre-training trains: all that rebuilds it, no weights.

    Attributes:
      encoder_config: Architecture of the encoder, speaker fusion included.
      head_config: The objective's head: masked prediction's `PretrainHeadConfig`
        (`choose_head`) or wav2vec 2.0's `QuantizerHeadConfig` (`choose_quantizer`).
      loss: The objective, masking and loss weights.
    """

    encoder_config: HubertConfig
    head_config: PretrainHeadConfig | QuantizerHeadConfig
    loss: PretrainLossConfig

    def __post_init__(self):
        wanted = {"masked_prediction": PretrainHeadConfig, "contrastive": QuantizerHeadConfig}
        if not isinstance(self.head_config, wanted[self.loss.objective]):
            raise ValueError(
                f"the {self.loss.objective} objective needs a {wanted[self.loss.objective]} "
                f"head, got {type(self.head_config).__name__}"
            )


def build_model(model_config: PretrainModelConfig):
    """The Flax module of the configured objective (params under `hubert` and `head`)."""
    if model_config.loss.objective == "contrastive":
        return EncoderForContrastive(model_config.encoder_config, model_config.head_config)
    return HubertForPretraining(model_config.encoder_config, model_config.head_config)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainSettings:
    """Optimiser and loop settings of one pre-training run (no defaults: a config states
    them; see `FAIRSEQ_HUBERT_LARGE_ADAM` for fairseq's HuBERT-large values).

    Attributes:
      epochs: Passes over the training data.
      peak_lr: Peak learning rate of the warm-up + linear-decay schedule.
      warmup_fraction: Share of the steps spent warming up.
      adam_b1, adam_b2, adam_eps: Adam's moment decay rates and denominator constant.
      weight_decay: Decoupled (AdamW) weight decay on every parameter; 0 disables it.
      clip_norm: Global gradient-norm clipping threshold; 0 disables it.
      log_every: Steps between metric reads.
      stop_after_steps: Stop (resumable) at this step; 0 disables.
      checkpoint_every_minutes: Also save the latest checkpoint this often; 0 disables.
      seed: Init, masking and dropout seed.
      accumulate_steps: Micro-batches per optimiser step (`train.accumulate_steps`).
      param_sharding: 'replicated' or 'fsdp' (`train.param_sharding`).
    """

    epochs: int
    peak_lr: float
    warmup_fraction: float
    adam_b1: float
    adam_b2: float
    adam_eps: float
    weight_decay: float
    clip_norm: float
    log_every: int
    stop_after_steps: int
    checkpoint_every_minutes: float
    seed: int
    accumulate_steps: int
    param_sharding: str

    def optimizer(self, total_steps: int):
        """The run's optax transformation for `total_steps` steps."""
        return make_optimizer(
            self.peak_lr,
            total_steps,
            self.warmup_fraction,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            b1=self.adam_b1,
            b2=self.adam_b2,
            eps=self.adam_eps,
        )


def run_pretraining(
    model_config: PretrainModelConfig,
    run: PretrainSettings,
    encoder_params: dict,
    head_params: dict | None,
    train_data,
    eval_batches,
    mesh: Mesh,
    workdir: str,
    description: str = "pretrain",
    noise=None,
):
    """Trains encoder + head with the configured objective; resumes from `workdir`.

    Args:
      model_config: The model to train.
      run: Optimiser and loop settings.
      encoder_params: The encoder's initial weights (a speaker table, if any, included).
      head_params: The head's initial weights, or None for a fresh head.
      train_data: A training `BatchPipeline` (with targets); its iterator state is
        checkpointed.
      eval_batches: Callable returning a fresh pass of validation batches (with targets).
      mesh: Device mesh.
      workdir: Checkpoints and logs go here.
      description: Name on the progress bar and in the logs ('bootstrap', 'PAPT', ...).
      noise: None, or WavLM's noise bank `(noise, noise_mask)` (see `make_train_step`).

    Returns:
      (LoopResult, best params {'hubert', 'head'}) — None params when stopped early by
      `stop_after_steps`.
    """
    model = build_model(model_config)
    rng = jax.random.PRNGKey(run.seed)
    params = {**init_head_params(model, rng), "hubert": encoder_params}
    if head_params is not None:
        params["head"] = head_params
    steps_per_epoch = train_data.batches_per_epoch
    total_steps = run.epochs * steps_per_epoch
    tx = run.optimizer(total_steps)
    state, shardings = create_state(params, tx, mesh, run.param_sharding)
    train_step = make_train_step(
        model,
        model_config.loss,
        mesh,
        run.accumulate_steps,
        state_shardings=shardings,
        noise=noise,
    )
    eval_step = make_eval_step(model, model_config.loss, mesh, shardings.params)
    loop_cfg = LoopConfig(
        total_steps=total_steps,
        eval_every=steps_per_epoch,
        log_every=min(run.log_every, steps_per_epoch),
        best_metric="loss",
        best_mode="min",
        stop_after_steps=run.stop_after_steps or None,
        checkpoint_every_minutes=run.checkpoint_every_minutes,
    )
    result, best = train_in_workdir(
        state=state,
        train_step=train_step,
        evaluate=lambda s: evaluate_loss(eval_step, s.params, eval_batches(), mesh, run.seed),
        train_data=train_data,
        mesh=mesh,
        rng=rng,
        workdir=workdir,
        config=loop_cfg,
        description=description,
        learning_rate=make_schedule(run.peak_lr, total_steps, run.warmup_fraction, "linear"),
        on_metrics=(
            CodebookWatch(model_config.head_config.num_codevector_groups, description)
            if model_config.loss.objective == "contrastive"
            else None
        ),
    )
    return result, None if best is None else best.params
