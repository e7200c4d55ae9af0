"""A JAX function replayed from its own jaxpr, primitive by primitive (for jax2onnx).

jax2onnx traces the function it converts with some `jax.numpy` functions replaced by its own
primitives (`jnp.shape` returns an array, `jnp.arange` of a symbolic length gets an unknown
size, `jnp.concatenate` keeps the first operand's length along a symbolic axis). Flax's
`nn.scan` and the encoder's symbolic frame counts break under those replacements. So the
model is traced here first, with plain JAX and the export's symbolic shapes, and jax2onnx is
handed a function that only binds the recorded `lax` primitives again: it never runs model
code, so no encoder family needs ONNX-specific code.

Two rewrites on the way, both exact:

* integer `rem` becomes `x - div(x, y) * y` (lax's truncating remainder): jax2onnx's `rem`
  rule cannot stamp a symbolic batch size on its intermediate values;
* `jit` and the custom-derivative calls (`custom_jvp_call`, `custom_vjp_call`) are inlined:
  an exported graph is inference only, so only their primal computation matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

# Primitives whose inner jaxpr is the computation itself (under the parameter named here).
_INLINED = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


def _closed_parts(inner) -> tuple[Any, Sequence[Any]]:
    """(jaxpr, consts) of a ClosedJaxpr or an open Jaxpr."""
    if hasattr(inner, "jaxpr"):
        return inner.jaxpr, inner.consts
    return inner, ()


def eval_jaxpr(jaxpr, consts: Sequence[Any], *args) -> list[Any]:
    """Binds every equation of `jaxpr` again, with the rewrites of the module docstring."""
    env: dict[Any, Any] = {}

    def read(var):
        return var.val if isinstance(var, jcore.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        inner = _INLINED.get(name)
        if name == "rem" and jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.integer):
            x, y = values
            out = [lax.sub(x, lax.mul(lax.div(x, y), y))]
        elif inner is not None and inner in eqn.params:
            out = eval_jaxpr(*_closed_parts(eqn.params[inner]), *values)
        else:
            result = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            out = result if eqn.primitive.multiple_results else [result]
        env.update(zip(eqn.outvars, out, strict=True))
    return [read(v) for v in jaxpr.outvars]


def replayable(fn: Callable, specs: Sequence[jax.ShapeDtypeStruct]) -> Callable:
    """`fn` traced on `specs`, as a function of flat arrays returning a tuple of arrays.

    Args:
      fn: a function of len(specs) arrays returning an array or a tuple of arrays.
      specs: its inputs' shapes (symbolic dimensions allowed) and dtypes.

    Returns:
      A function with the same inputs that binds the recorded primitives (see the module
      docstring); its outputs are the flattened outputs of `fn`.
    """
    closed = jax.make_jaxpr(fn)(*specs)

    def replay(*args):
        return tuple(eval_jaxpr(closed.jaxpr, closed.consts, *args))

    return replay
