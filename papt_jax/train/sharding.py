"""Data parallelism with `jax.jit` over a one-axis device mesh.

State is replicated (`P()`), batches are split along their first axis over the
`'data'` axis. Each process contributes its local rows with
`jax.make_array_from_process_local_data`, which also covers multi-host runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
# Host-only batch fields (utterance and speaker ids) never go to the devices.
HOST_ONLY_KEYS = frozenset({"key", "speaker_id"})


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


def jit_train_step(step_fn, mesh: Mesh):
    """Jits `(state, batch, rng) -> (state, metrics)`: state replicated and donated,
    batch split over the data axis."""
    return jax.jit(
        step_fn,
        in_shardings=(replicated(mesh), data_sharded(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=(0,),
    )
