"""Gradient accumulation inside one jitted step: a batch of k*B rows as k micro-batches.

`train.accumulate_steps = k` makes one optimiser step from k micro-batches of B rows. The
step receives the whole k*B batch, draws whatever is drawn per batch (HuBERT's masks) for
all of it at once, and runs a `lax.scan` over k slices, so only one micro-batch's
activations are alive at a time; gradients are summed in float32 in the scan's carry.
How the per-micro-batch terms add up to the one-batch loss is the step's business
(`pretrain`: sums over frames divided by whole-batch counts; `finetune`: 1 - CCC of the
whole batch's predictions, which needs a second pass).

The slices keep each device's rows on that device: with the batch split over N devices
(device d holds rows [d*kB/N, (d+1)*kB/N)), micro-batch j takes B/N rows from every
device, so no micro-batch waits on a subset of the devices and no rows move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from papt_jax.train.sharding import DATA_AXIS


def micro_batches(batch: dict[str, jax.Array], steps: int, mesh: Mesh) -> dict[str, jax.Array]:
    """Splits every (k*B, ...) array of `batch` into (k, B, ...) micro-batches.

    Args:
      batch: arrays whose leading axis is the batch (split over the mesh's data axis).
      steps: k, the number of micro-batches.
      mesh: the device mesh (its size N must divide B).

    Returns:
      The same keys with arrays (k, B, ...); row r of micro-batch j is row
      `d*k*B/N + j*B/N + i` of the batch, for device d = r // (B/N) and i = r % (B/N).

    Raises:
      ValueError: when the batch does not split into k micro-batches over N devices.
    """
    devices = mesh.size
    out = {}
    for name, value in batch.items():
        rows = value.shape[0]
        if rows % (steps * devices):
            raise ValueError(
                f"batch field {name!r} has {rows} rows: not {steps} micro-batches over "
                f"{devices} devices (need a multiple of {steps * devices})"
            )
        per_device = rows // (steps * devices)
        split = value.reshape(devices, steps, per_device, *value.shape[1:])
        split = jnp.swapaxes(split, 0, 1).reshape(steps, rows // steps, *value.shape[1:])
        spec = PartitionSpec(None, DATA_AXIS)
        out[name] = jax.lax.with_sharding_constraint(split, NamedSharding(mesh, spec))
    return out


def flatten_micro_batches(tree: Any) -> Any:
    """(k, B, ...) arrays -> (k*B, ...) in micro-batch order (for whole-batch statistics)."""
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)


def scan_sum(fn: Callable[[Any, jax.Array], Any], xs: Any, steps: int) -> Any:
    """Sum over micro-batches of `fn(micro_batch, index)`, one micro-batch at a time.

    Args:
      fn: (micro-batch pytree, index ()) -> pytree of arrays (e.g. gradients and sums).
      xs: pytree of (k, ...) arrays, scanned over their leading axis.
      steps: k.

    Returns:
      The element-wise sum of `fn`'s outputs over the k micro-batches.
    """
    shapes = jax.eval_shape(fn, jax.tree.map(lambda x: x[0], xs), jnp.zeros((), jnp.int32))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(total, x):
        micro, index = x
        return jax.tree.map(jnp.add, total, fn(micro, index)), None

    total, _ = jax.lax.scan(body, zeros, (xs, jnp.arange(steps, dtype=jnp.int32)))
    return total


def two_pass_loss_and_grads(
    forward: Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, Any]],
    loss_of: Callable[[jax.Array, dict], jax.Array],
    params: Any,
    carry: Any,
    micro: dict[str, jax.Array],
    dropout_key: jax.Array,
) -> tuple[tuple[jax.Array, Any], Any]:
    """A loss of the whole batch's predictions, and its gradient, from k micro-batches.

    For a loss that is a function of whole-batch statistics (1 - CCC: means, variances,
    covariance), not a sum over rows. Pass 1 runs the forward of every micro-batch (no
    activations kept for a backward pass), threading `carry` (BatchNorm running
    statistics, updated after each micro-batch as a PyTorch loop of k forwards would) and
    collecting the predictions; the loss and its gradient with respect to each prediction
    come from all of them at once. Pass 2 runs each micro-batch again with the same dropout
    key and backpropagates those prediction gradients (a vector-Jacobian product). The
    gradient is that of the whole batch's loss, for one more forward pass per micro-batch.

    Args:
      forward: (params, carry, micro-batch, dropout key) -> (predictions (B,), new carry).
        Deterministic given its arguments: pass 2 must reproduce pass 1's predictions.
      loss_of: (predictions (k*B,), micro-batches flattened to (k*B, ...)) -> () loss.
      params: differentiated.
      carry: threaded through pass 1 (pass 2 starts each micro-batch from the initial one).
      micro: (k, B, ...) arrays from `micro_batches`.
      dropout_key: micro-batch j uses `fold_in(dropout_key, j)` in both passes.

    Returns:
      ((loss, carry after the k micro-batches), gradient with respect to `params`).
    """
    steps = jax.tree.leaves(micro)[0].shape[0]
    keys = jax.vmap(jax.random.fold_in, (None, 0))(dropout_key, jnp.arange(steps))

    def predict(carry, xs):
        mb, key = xs
        preds, carry = forward(params, carry, mb, key)
        return carry, preds

    final, preds = jax.lax.scan(predict, carry, (micro, keys))
    loss, dpreds = jax.value_and_grad(loss_of)(preds.reshape(-1), flatten_micro_batches(micro))
    xs = {"batch": micro, "dpreds": dpreds.reshape(preds.shape), "key": keys}

    def backward(x, index):
        del index

        def surrogate(params):
            return jnp.vdot(x["dpreds"], forward(params, carry, x["batch"], x["key"])[0])

        return jax.grad(surrogate)(params)

    return (loss, final), scan_sum(backward, xs, steps)
