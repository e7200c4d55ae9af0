"""Train state and optimiser construction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from flax.training import train_state
from jax.sharding import Mesh

from papt_jax.train.sharding import place, tree_shardings


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm statistics (empty for pre-training)."""

    batch_stats: Any = None


def create_state(
    params, tx: optax.GradientTransformation, mesh: Mesh, param_sharding: str, batch_stats=None
) -> tuple[TrainState, TrainState]:
    """A fresh TrainState on the mesh's devices, and its shardings.

    The optimiser state is created on the devices already split as `param_sharding` says
    (a jitted init with those output shardings), so under 'fsdp' no device ever holds a
    whole copy of it. The parameters are copied, never aliased: the step donates the
    state, which must not delete arrays the caller still holds.

    Args:
      params: Initial parameters (host or device arrays).
      tx: The optimiser.
      mesh: The device mesh.
      param_sharding: 'replicated' or 'fsdp' (`train.sharding`).
      batch_stats: BatchNorm statistics (fine-tuning), or None.

    Returns:
      (state, shardings): the state and a TrainState of `NamedSharding`s with its
      structure, for `jit_train_step` and for restoring checkpoints onto.
    """

    def build(params, batch_stats):
        return TrainState.create(apply_fn=None, params=params, tx=tx, batch_stats=batch_stats)

    shardings = tree_shardings(jax.eval_shape(build, params, batch_stats), mesh, param_sharding)
    params = place(params, shardings.params)
    batch_stats = place(batch_stats, shardings.batch_stats)
    state = jax.jit(build, out_shardings=shardings)(params, batch_stats)
    return state, shardings


def guarded_update(state: TrainState, grads, loss, **updates):
    """Applies `grads` unless the loss or gradient norm is NaN/inf (then keeps `state`).

    Skipping inside the step keeps the state finite without a host sync; the loop sees
    `finite == 0` at its next metric read and stops.

    Returns:
      (new state, global gradient norm, finite flag as float32 0/1).
    """
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.apply_gradients(grads=grads, **updates)
    new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
    return new_state, grad_norm, finite.astype(jnp.float32)


def warmup_linear_schedule(peak_lr: float, total_steps: int, warmup_fraction: float):
    """Linear warm-up to `peak_lr` over `warmup_fraction` of the steps, then linear decay to 0."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = max(int(round(total_steps * warmup_fraction)), 0)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_lr, max(warmup, 1)),
            optax.linear_schedule(peak_lr, 0.0, max(total_steps - warmup, 1)),
        ],
        boundaries=[warmup],
    )


def make_schedule(peak_lr: float, total_steps: int, warmup_fraction: float, schedule: str):
    """The learning rate by step: 'linear' (warm-up, then linear decay) or 'constant'."""
    if schedule == "linear":
        return warmup_linear_schedule(peak_lr, total_steps, warmup_fraction)
    if schedule == "constant":
        return peak_lr
    raise ValueError(f"unknown schedule {schedule!r}; use 'linear' or 'constant'")


def trainable_mask(params, frozen_prefixes: Sequence[str]):
    """Pytree of bools: False for parameters whose '/'-joined path starts with a frozen prefix."""
    flat = traverse_util.flatten_dict(params, sep="/")
    mask = {k: not any(k.startswith(p) for p in frozen_prefixes) for k in flat}
    return traverse_util.unflatten_dict(mask, sep="/")


# PyTorch's `torch.optim.Adam` defaults, which fine-tuning keeps (the paper: "Adam").
TORCH_ADAM_B1, TORCH_ADAM_B2, TORCH_ADAM_EPS = 0.9, 0.999, 1e-8


def make_optimizer(
    peak_lr: float,
    total_steps: int,
    warmup_fraction: float = 0.05,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
    schedule: str = "linear",
    params=None,
    frozen_prefixes: Sequence[str] = (),
    b1: float = TORCH_ADAM_B1,
    b2: float = TORCH_ADAM_B2,
    eps: float = TORCH_ADAM_EPS,
) -> optax.GradientTransformation:
    """Adam(W) with the paper's schedule, optional clipping and frozen sub-trees.

    With `weight_decay > 0` this is `torch.optim.AdamW`: the decay is decoupled
    (`p -= lr * weight_decay * p`, applied to every trainable parameter, biases and norms
    included, as fairseq's Adam does) and `eps` is added to the bias-corrected
    `sqrt(v_hat)`. Clipping scales the gradients by `clip_norm / global_norm` when the
    norm exceeds `clip_norm`, before Adam sees them.

    Args:
      peak_lr: Peak learning rate.
      total_steps: Steps of the whole run (for the schedule).
      warmup_fraction: Share of steps spent warming up ('linear' schedule).
      weight_decay: Decoupled weight decay (0: plain Adam).
      clip_norm: Global-norm gradient clipping (None or 0: off).
      schedule: 'linear' (warm-up + linear decay) or 'constant'.
      params: Needed with `frozen_prefixes`, to build the mask.
      frozen_prefixes: Parameter paths (e.g. 'hubert/feature_extractor') not updated.
      b1, b2: Adam's moment decay rates.
      eps: Adam's denominator constant.
    """
    lr = make_schedule(peak_lr, total_steps, warmup_fraction, schedule)
    for name, value in (("b1", b1), ("b2", b2)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Adam {name} must be in [0, 1), got {value}")
    if eps <= 0 or weight_decay < 0 or (clip_norm is not None and clip_norm < 0):
        raise ValueError(
            f"need eps > 0, weight_decay >= 0 and clip_norm >= 0, got {eps}, {weight_decay}, "
            f"{clip_norm}"
        )
    parts = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay:
        parts.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    else:
        parts.append(optax.adam(lr, b1=b1, b2=b2, eps=eps))
    tx = optax.chain(*parts)
    if frozen_prefixes:
        if params is None:
            raise ValueError("frozen_prefixes needs params to build the mask")
        mask = trainable_mask(params, frozen_prefixes)
        tx = optax.multi_transform(
            {True: tx, False: optax.set_to_zero()},
            mask,
        )
    return tx
