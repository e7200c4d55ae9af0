"""Grouped 1-D convolution with a kernel gradient computed as matrix products.

HuBERT's positional embedding is a grouped conv with a very wide kernel (128 taps,
16 groups at base size). XLA's CPU backend lowers the gradient of such a kernel to one
window-dilated convolution that it runs slowly: it took 43 % of a base fine-tuning step
in `benchmarks/encoder.py --profile` (see BENCHMARKS.md). The forward pass and the
input gradient are ordinary convolutions and stay as they are; only the kernel gradient
is rewritten here, as an einsum over shifted copies of the input, a few taps at a time.
The result is the same sum of products, so values match the plain convolution's
gradient to float rounding (tested in `tests/test_hubert.py`). `models/layers.py` uses it
on the CPU only; on GPUs and TPUs XLA's own gradient has fast kernels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Kernel taps per einsum in the kernel gradient: bounds the shifted copies of the input
# held at once to TAPS_PER_CHUNK x the input's size.
TAPS_PER_CHUNK = 8


def plain_grouped_conv1d(x: jax.Array, kernel: jax.Array, groups: int, pad: int) -> jax.Array:
    """The same convolution with XLA's own gradient (arguments as in `grouped_conv1d`)."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=[(pad, pad)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def grouped_conv1d(x: jax.Array, kernel: jax.Array, groups: int, pad: int) -> jax.Array:
    """Stride-1 grouped conv, zero padding `pad` on both sides.

    Args:
      x: (batch, time, channels).
      kernel: (taps, channels // groups, features), Flax's 'WIO' layout.
      groups: Feature groups; `channels` and `features` must both divide by it.
      pad: Zeros added before and after the time axis.

    Returns:
      (batch, time + 2 * pad - taps + 1, features).
    """
    return plain_grouped_conv1d(x, kernel, groups, pad)


def _forward(x, kernel, groups, pad):
    return plain_grouped_conv1d(x, kernel, groups, pad), (x, kernel)


def kernel_gradient(x: jax.Array, dy: jax.Array, taps: int, groups: int, pad: int) -> jax.Array:
    """d(loss)/d(kernel) (taps, in/groups, features) from the input and the output gradient.

    kernel_grad[k, c, g * out_g + d] = sum over batch b and output time t of
    x_padded[b, t + k, g, c] * dy[b, t, g, d].
    """
    batch, out_time, features = dy.shape
    in_per_group = x.shape[-1] // groups
    out_per_group = features // groups
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
    xp = xp.reshape(batch, xp.shape[1], groups, in_per_group)
    dyg = dy.reshape(batch, out_time, groups, out_per_group)
    chunks = []
    for start in range(0, taps, TAPS_PER_CHUNK):
        stop = min(start + TAPS_PER_CHUNK, taps)
        # (batch, out_time, chunk, groups, in_per_group): the input seen by each tap.
        shifted = jnp.stack([xp[:, k : k + out_time] for k in range(start, stop)], axis=2)
        chunks.append(
            jnp.einsum("btkgc,btgd->kcgd", shifted, dyg, preferred_element_type=jnp.float32)
        )
    grad = jnp.concatenate(chunks, axis=0)
    return grad.reshape(taps, in_per_group, features)


def _backward(groups, pad, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: plain_grouped_conv1d(x_, kernel, groups, pad), x)
    (dx,) = input_vjp(dy)
    dkernel = kernel_gradient(x, dy, kernel.shape[0], groups, pad)
    return dx, dkernel.astype(kernel.dtype)


grouped_conv1d.defvjp(_forward, _backward)
