"""Data parallelism with `jax.jit` over a one-axis device mesh, and sharded parameters.

Batches are split along their first axis over the `'data'` axis. Each process contributes
its local rows with `jax.make_array_from_process_local_data`, which also covers multi-host
runs. The train state (parameters, optimiser moments) is either

* `replicated` (`P()`): every device holds all of it; or
* `fsdp`: each array of at least `MIN_SHARDED_SIZE` elements is split over the same
  `'data'` axis along its largest dimension that the device count divides (ZeRO-3 /
  FSDP style); smaller or indivisible arrays stay replicated. XLA then gathers each
  layer's weights where the step uses them and reduce-scatters their gradients, so a
  device holds about 1/N of the state at rest.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
# Host-only batch fields (utterance and speaker ids) never go to the devices.
HOST_ONLY_KEYS = frozenset({"key", "speaker_id"})
PARAM_SHARDINGS = ("replicated", "fsdp")
# Under 'fsdp', arrays smaller than this (biases, norms, scalars: 64 KiB in float32) stay
# replicated: splitting them saves little memory and costs a collective each.
MIN_SHARDED_SIZE = 2**14


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all by default)."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices, only {len(devices)} exist")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Copies every leaf of `tree` onto all devices of `mesh`.

    Always a copy: the train step donates the state, which must not delete arrays the
    caller still holds (such as freshly converted parameters).
    """
    return jax.device_put(tree, replicated(mesh), may_alias=False)


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns this process's batch into global arrays split over the data axis.

    Raises:
      ValueError: when the local batch does not split evenly over local devices.
    """
    sharding = data_sharded(mesh)
    local_devices = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    out = {}
    for name, value in batch.items():
        if name in HOST_ONLY_KEYS:
            continue
        if value.shape[0] % local_devices:
            raise ValueError(
                f"batch field {name!r} has {value.shape[0]} rows, not divisible by the "
                f"{local_devices} local devices; choose a batch size that is"
            )
        out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return out


def fsdp_spec(shape: tuple[int, ...], num_devices: int) -> PartitionSpec:
    """How 'fsdp' splits an array of `shape` over `num_devices`: its largest dimension the
    device count divides (the first of equals), or nothing (replicated) when the array is
    small or no dimension divides."""
    if num_devices <= 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    divisible = [(size, -axis) for axis, size in enumerate(shape) if size % num_devices == 0]
    if not divisible:
        return PartitionSpec()
    axis = -max(divisible)[1]
    return PartitionSpec(*([None] * axis), DATA_AXIS)


def tree_shardings(tree, mesh: Mesh, param_sharding: str = "replicated"):
    """A `NamedSharding` for every array leaf of `tree` (a state, params, or their shapes).

    Args:
      tree: pytree of arrays or `jax.ShapeDtypeStruct`s.
      mesh: the device mesh.
      param_sharding: 'replicated' or 'fsdp' (see the module docstring).
    """
    if param_sharding not in PARAM_SHARDINGS:
        raise ValueError(f"param_sharding must be one of {PARAM_SHARDINGS}, got {param_sharding!r}")
    if param_sharding == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), tree)
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(np.shape(leaf)), mesh.size)), tree
    )


def place(tree, shardings):
    """Copies `tree` onto `shardings` (a matching tree); never aliases the input arrays, which
    a donating step would otherwise delete under the caller."""
    return jax.device_put(tree, shardings, may_alias=False)


def bytes_per_device(tree) -> dict[int, int]:
    """Bytes of `tree`'s array shards held by each device (device id -> bytes)."""
    held: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device.id] = held.get(shard.device.id, 0) + shard.data.nbytes
    return held


class BoundStep:
    """A jitted step whose last argument is fixed: arrays placed on the devices once (not
    baked into the program as constants), called and lowered as `(state, batch, rng)`."""

    def __init__(self, jitted, constants):
        self.jitted = jitted
        self.constants = constants

    def __call__(self, *args):
        return self.jitted(*args, self.constants)

    def lower(self, *args):
        return self.jitted.lower(*args, self.constants)


def jit_train_step(step_fn, mesh: Mesh, state_shardings=None, constants=None):
    """Jits `(state, batch, rng) -> (state, metrics)`: state donated and kept on
    `state_shardings` (default: replicated), batch split over the data axis.

    With `constants` (a pytree of arrays, e.g. a noise bank), `step_fn` takes them as a
    fourth argument; they are replicated on the mesh once and bound (`BoundStep`).
    """
    state = replicated(mesh) if state_shardings is None else state_shardings
    in_shardings = (state, data_sharded(mesh), replicated(mesh))
    if constants is not None:
        in_shardings += (replicated(mesh),)
    jitted = jax.jit(
        step_fn,
        in_shardings=in_shardings,
        out_shardings=(state, replicated(mesh)),
        donate_argnums=(0,),
    )
    if constants is None:
        return jitted
    return BoundStep(jitted, jax.device_put(constants, replicated(mesh)))
