"""The Transformer layer stack (scanned or unrolled, under a remat policy) and its two layouts.

Running the stack: `run_layers`, called from an encoder's compact `__call__`, applies
`num_hidden_layers` copies of a layer module:

* scanned (`config.scan_layers`, the default): one `nn.scan` over the layer, its parameters
  stacked on a leading layer axis under one module, `<name>/...` with leaves
  (layers, ...). XLA compiles one layer body instead of L copies, so compile time no
  longer grows with depth, and with remat inside the scan only the layer inputs are kept
  for the backward pass.
* unrolled (`scan_layers=False`, for debugging): one module per layer, `<name>_{i}/...`.

Both draw each layer's dropout key as `fold_in(dropout_rng, i)`, so with the same
parameters (stacked vs per-layer) both compute the same function, dropout included.
Inputs that are the same for every layer (the key mask, an optional attention bias) are
broadcast, not scanned over. Hidden states are scan outputs only when asked for, so
training does not keep L copies of the activations alive.

Remat (`config.remat`): 'none', 'full' (recompute everything in the backward pass; JAX's
`nothing_saveable`) or the name of an argument-free `jax.checkpoint_policies` policy, e.g.
'dots_saveable' (keep matrix-product outputs, recompute the rest).

Layouts: parameter trees (and anything shaped like them: optimiser moments, abstract
shapes) hold the layers either stacked (`layers`, leading axis L) or per layer
(`layers_0`, `layers_1`, ...: the layout of every checkpoint and converted folder written
before the stack was scanned, and of the PyTorch naming). `to_layout` turns any pytree
into either layout; it is the one owner of that conversion (convert, checkpoints and the
workspace use it). `first_layers` keeps only the first n layers (e.g. a pseudo-label
teacher that needs layer 9 of 12: a scan would otherwise compute all 12).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from papt_jax.models.config import REMAT_POLICIES

STACKED = "layers"
_PER_LAYER = re.compile(r"^layers_(\d+)$")


def remat_policy(name: str) -> Callable[..., bool] | None:
    """The `jax.checkpoint` policy of a `config.remat` name (None for 'none').

    Raises:
      ValueError: an unknown name.
    """
    if name not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {name!r}")
    if name == "none":
        return None
    return getattr(jax.checkpoint_policies, "nothing_saveable" if name == "full" else name)


def run_layers(
    layer_cls: type[nn.Module],
    config: Any,
    x: jax.Array,
    mask: jax.Array,
    *,
    deterministic: bool,
    dropout_rng: jax.Array | None,
    attention_bias: jax.Array | None = None,
    output_hidden_states: bool = False,
    drop_prefix: int = 0,
) -> tuple[jax.Array, tuple[jax.Array, ...] | None]:
    """Applies the layer stack; call from inside a module's compact `__call__`.

    Args:
      layer_cls: the layer module, built as `layer_cls(config, deterministic=...)` and
        called as `layer(x, mask, attention_bias, dropout_rng)`; it must return x's shape.
      config: holds `num_hidden_layers`, `scan_layers` and `remat`.
      x: (batch, time, dim) input of the first layer.
      mask: (batch, time) bool, broadcast to every layer.
      deterministic: disables dropout.
      dropout_rng: base dropout key (None when deterministic); layer i uses
        `fold_in(dropout_rng, i)`.
      attention_bias: optional (batch, heads, time, time), broadcast to every layer.
      output_hidden_states: also return each layer's input.
      drop_prefix: leading positions (e.g. a speaker prefix token) left out of the hidden
        states.

    Returns:
      The last layer's output (batch, time, dim), and None or the L layer inputs, each
      (batch, time - drop_prefix, dim).
    """
    num_layers = config.num_hidden_layers
    policy = remat_policy(config.remat)
    if not deterministic and dropout_rng is None:
        raise ValueError("run_layers needs a dropout_rng when not deterministic")

    def layer_key(index):
        return None if deterministic else jax.random.fold_in(dropout_rng, index)

    if not config.scan_layers:
        cls = layer_cls if config.remat == "none" else nn.remat(layer_cls, policy=policy)
        hidden = []
        for i in range(num_layers):
            if output_hidden_states:
                hidden.append(x[:, drop_prefix:])
            layer = cls(config, deterministic=deterministic, name=f"{STACKED}_{i}")
            x = layer(x, mask, attention_bias, layer_key(i)).astype(x.dtype)
        return x, tuple(hidden) if output_hidden_states else None

    # Inside a scan, common-subexpression elimination cannot merge the recomputation with
    # the forward pass, so remat's CSE barrier is not needed (Flax's advice for scan).
    cls = layer_cls
    if config.remat != "none":
        cls = nn.remat(layer_cls, policy=policy, prevent_cse=False)
    layer = cls(config, deterministic=deterministic, name=STACKED)

    def body(module, carry, index):
        seen = carry[:, drop_prefix:] if output_hidden_states else None
        out = module(carry, mask, attention_bias, layer_key(index))
        return out.astype(carry.dtype), seen

    scan = nn.scan(
        body,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        length=num_layers,
    )
    x, seen = scan(layer, x, jnp.arange(num_layers))
    if not output_hidden_states:
        return x, None
    return x, tuple(seen[i] for i in range(num_layers))


# --- layouts ----------------------------------------------------------------------------------


# The module that owns the Transformer layer stack. Other modules may number their own
# children `layers_{j}` (data2vec-audio's positional conv stack): those are not layer stacks.
STACK_OWNER = "encoder"


def is_layer_container(node: Any) -> bool:
    """Whether `node` is a dict holding a layer stack (`layers` or `layers_0`, ...)."""
    return isinstance(node, Mapping) and (
        STACKED in node or any(_PER_LAYER.match(str(k)) for k in node)
    )


def _owner_name(path: tuple) -> str | None:
    if not path:
        return None
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", "")))


def _map_stacks(fn: Callable[[Mapping], Any], tree: Any) -> Any:
    """Applies `fn` to every Transformer layer stack of `tree` (a dict under `encoder`, or
    the tree itself when it is one); everything else is returned unchanged."""

    def visit(path, node):
        if is_layer_container(node) and (not path or _owner_name(path) == STACK_OWNER):
            return fn(node)
        return node

    return jax.tree_util.tree_map_with_path(visit, tree, is_leaf=is_layer_container)


def _layer_keys(container: Mapping) -> list[str]:
    """The per-layer keys of a container, in layer order (checked contiguous from 0)."""
    found = sorted((int(m.group(1)), k) for k in container if (m := _PER_LAYER.match(str(k))))
    indices = [i for i, _ in found]
    if indices != list(range(len(indices))):
        raise ValueError(f"per-layer keys are not layers_0..layers_{len(indices) - 1}: {indices}")
    return [k for _, k in found]


def _stacked_sharding(sharding, add: bool):
    """The sharding of a leaf with the layer axis added (`add`) or removed."""
    if not isinstance(sharding, NamedSharding):
        return sharding
    spec = tuple(sharding.spec)
    if add:
        return NamedSharding(sharding.mesh, PartitionSpec(None, *spec))
    if spec and spec[0] is not None:  # sharded over layers: one layer's slice is not expressible
        return NamedSharding(sharding.mesh, PartitionSpec())
    return NamedSharding(sharding.mesh, PartitionSpec(*spec[1:]))


def _stack_leaves(*leaves):
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(
            (len(leaves), *first.shape),
            first.dtype,
            sharding=_stacked_sharding(first.sharding, add=True),
        )
    if all(isinstance(leaf, np.ndarray | np.generic) for leaf in leaves):
        return np.stack(leaves)
    return jnp.stack(leaves)


def _unstack_leaf(leaf, index: int):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(
            leaf.shape[1:], leaf.dtype, sharding=_stacked_sharding(leaf.sharding, add=False)
        )
    return leaf[index]


def stack_layers(container: Mapping) -> dict:
    """`{layers_0: t0, layers_1: t1, ...}` -> `{layers: stacked}` (other keys unchanged)."""
    keys = _layer_keys(container)
    if STACKED in container:
        if keys:
            raise ValueError(f"both {STACKED!r} and per-layer keys {keys[:2]}... in one tree")
        return dict(container)
    out = {k: v for k, v in container.items() if k not in keys}
    out[STACKED] = jax.tree.map(_stack_leaves, *(container[k] for k in keys))
    return out


def unstack_layers(container: Mapping) -> dict:
    """`{layers: stacked}` -> `{layers_0: t0, layers_1: t1, ...}` (other keys unchanged)."""
    if STACKED not in container:
        _layer_keys(container)  # checks the per-layer keys
        return dict(container)
    stacked = container[STACKED]
    sizes = {
        leaf.shape[0]
        for leaf in jax.tree.leaves(stacked)
        if getattr(leaf, "shape", None) is not None and len(leaf.shape) > 0
    }
    if len(sizes) != 1:
        raise ValueError(f"stacked layer leaves disagree on the number of layers: {sizes}")
    (num_layers,) = sizes
    out = {k: v for k, v in container.items() if k != STACKED}
    for i in range(num_layers):
        out[f"{STACKED}_{i}"] = jax.tree.map(lambda leaf, i=i: _unstack_leaf(leaf, i), stacked)
    return out


def to_layout(tree: Any, scan_layers: bool) -> Any:
    """`tree` with every layer stack stacked (`scan_layers`) or per layer.

    Works on any pytree that holds parameter-shaped dicts: parameters, train states with
    their optimiser moments, `jax.ShapeDtypeStruct` trees (shardings follow the layer
    axis). Arrays keep their kind: NumPy stays NumPy.
    """
    return _map_stacks(stack_layers if scan_layers else unstack_layers, tree)


def layout_of(tree: Any) -> bool | None:
    """True (stacked), False (per layer) or None (no layer stack) for a pytree.

    Raises:
      ValueError: when the tree mixes both layouts.
    """
    found = set()

    def visit(node):
        found.add(STACKED in node)
        return node

    _map_stacks(visit, tree)
    if len(found) > 1:
        raise ValueError("the tree holds stacked and per-layer layer stacks at once")
    return found.pop() if found else None


def first_layers(config: Any, params: Any, num_layers: int) -> tuple[Any, Any]:
    """The encoder cut after `num_layers` layers: (config, params) in the config's layout.

    Layers past the cut are not computed at all (a scan runs as many layers as it has
    parameters). The cut encoder's last hidden state is layer `num_layers`' output; its
    pre-LN final LayerNorm, if any, is kept (it applies to `last_hidden_state` only).

    Raises:
      ValueError: `num_layers` outside 1..config.num_hidden_layers.
    """
    if not 1 <= num_layers <= config.num_hidden_layers:
        raise ValueError(f"num_layers must be in 1..{config.num_hidden_layers}, got {num_layers}")

    def cut(node):
        if STACKED in node:
            kept = jax.tree.map(lambda leaf: leaf[:num_layers], node[STACKED])
            return {**{k: v for k, v in node.items() if k != STACKED}, STACKED: kept}
        dropped = {f"{STACKED}_{i}" for i in range(num_layers, config.num_hidden_layers)}
        return {k: v for k, v in node.items() if k not in dropped}

    params = _map_stacks(cut, params)
    return config.replace(num_hidden_layers=num_layers), params
