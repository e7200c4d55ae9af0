"""The PyTorch <-> Flax parameter mapping machinery: tables of rules, transforms, checks.

A mapping table is a tuple of `Rule`s: each pairs a Hugging Face `state_dict` key
pattern with a Flax parameter path pattern (`{i}`-style fields stand for indices) and
names the `Transform` that turns the PyTorch array into the Flax one (and back). The
tables themselves live with the naming they describe (`papt_jax.convert.families`);
every other naming (fairseq, the WavLM release, legacy weight norm) is a rename layer
(`rename_keys`) onto the HF names.

Conversion is checked against the shapes the Flax model expects (from
`jax.eval_shape(model.init, ...)`): every missing, unexpected or mis-shaped key is
collected and reported in one `ConversionError`.

The tables name Transformer layers one by one (`encoder/layers_{i}`), as PyTorch does. A
scanned model keeps them stacked (`encoder/layers`, leading layer axis): `convert.api`
converts through the per-layer layout with `models.stack.to_layout`, so no table changes
with the layout.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from papt_jax.convert.conversion_errors import ConversionError


@dataclasses.dataclass(frozen=True)
class Transform:
    """A layout change between a PyTorch array and a Flax array.

    Attributes:
      name: Shown in error messages.
      torch_ndim: Rank of the PyTorch array (checked before transforming).
      to_flax: PyTorch layout -> Flax layout.
      to_torch: Flax layout -> PyTorch layout (the exact inverse).
    """

    name: str
    torch_ndim: int
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


IDENTITY_1D = Transform("identity", 1, lambda a: a, lambda a: a)
IDENTITY_2D = Transform("identity", 2, lambda a: a, lambda a: a)
# nn.Linear.weight is (out, in); flax Dense kernel is (in, out).
TRANSPOSE_DENSE = Transform("transpose_dense", 2, lambda a: a.T, lambda a: a.T)
# nn.Conv1d.weight is (out, in/groups, kernel); flax Conv kernel is (kernel, in/groups, out).
TRANSPOSE_CONV = Transform(
    "transpose_conv", 3, lambda a: a.transpose(2, 1, 0), lambda a: a.transpose(2, 1, 0)
)
# weight_norm(dim=2) stores the gain as (1, 1, kernel); the Flax module keeps (kernel,).
SQUEEZE_G = Transform("squeeze_g", 3, lambda a: a.reshape(-1), lambda a: a.reshape(1, 1, -1))
# WavLM's per-head gate constant is (1, heads, 1, 1) in PyTorch, (heads,) in Flax.
SQUEEZE_HEADS = Transform(
    "squeeze_heads", 4, lambda a: a.reshape(-1), lambda a: a.reshape(1, -1, 1, 1)
)
# wav2vec2's codebook is (1, groups * vars, dim / groups) in PyTorch; Flax drops the 1.
SQUEEZE_LEADING = Transform(
    "squeeze_leading", 3, lambda a: a.reshape(a.shape[1:]), lambda a: a.reshape(1, *a.shape)
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of a mapping table: `torch` key pattern <-> `flax` path pattern."""

    torch: str
    flax: str
    transform: Transform


def dense(torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
    """The two rows of an `nn.Linear` <-> `nn.Dense`."""
    return (
        Rule(f"{torch_prefix}.weight", f"{flax_prefix}/kernel", TRANSPOSE_DENSE),
        Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias", IDENTITY_1D),
    )


def norm(torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
    """The two rows of an `nn.LayerNorm`/`nn.GroupNorm` <-> a Flax norm (scale, bias)."""
    return (
        Rule(f"{torch_prefix}.weight", f"{flax_prefix}/scale", IDENTITY_1D),
        Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias", IDENTITY_1D),
    )


class _Pattern:
    """A key pattern with `{i}` placeholders, matched and filled in."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.fields = tuple(re.findall(r"\{(\w+)\}", pattern))
        regex = re.escape(pattern)
        for field in set(self.fields):
            regex = regex.replace(re.escape("{" + field + "}"), rf"(?P<{field}>\d+)", 1)
            # A field used twice must match the same value.
            regex = regex.replace(re.escape("{" + field + "}"), rf"(?P={field})")
        self.regex = re.compile(regex)

    def match(self, key: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(key)
        return None if found is None else found.groupdict()

    def fill(self, groups: Mapping[str, str]) -> str:
        return self.pattern.format(**groups)


@dataclasses.dataclass(frozen=True)
class _CompiledRule:
    rule: Rule
    torch: _Pattern
    flax: _Pattern


def _compile(rules: Sequence[Rule]) -> tuple[_CompiledRule, ...]:
    compiled = []
    for rule in rules:
        torch_pattern, flax_pattern = _Pattern(rule.torch), _Pattern(rule.flax)
        if set(torch_pattern.fields) != set(flax_pattern.fields):
            raise ValueError(f"rule {rule} uses different placeholders on its two sides")
        compiled.append(_CompiledRule(rule, torch_pattern, flax_pattern))
    return tuple(compiled)


def _lookup(key: str, compiled, side: str) -> tuple[_CompiledRule, dict[str, str]] | None:
    for entry in compiled:
        groups = getattr(entry, side).match(key)
        if groups is not None:
            return entry, groups
    return None


def rename_keys(
    state_dict: Mapping[str, np.ndarray],
    renames: Sequence[tuple[str, str]],
    *,
    reverse: bool = False,
) -> dict[str, np.ndarray]:
    """Renames keys by a (source, target) pattern table; unmatched keys pass unchanged.

    Args:
      state_dict: PyTorch-named arrays.
      renames: (source pattern, target pattern) pairs with `{i}` placeholders.
      reverse: rename target -> source instead.

    Raises:
      ConversionError: when two keys would land on the same name.
    """
    if reverse:
        renames = [(target, source) for source, target in renames]
    pairs = [(_Pattern(source), _Pattern(target)) for source, target in renames]
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}
    clashes = []
    for key, value in state_dict.items():
        new_key = key
        for src, dst in pairs:
            groups = src.match(key)
            if groups is not None:
                new_key = dst.fill(groups)
                break
        if new_key in out:
            clashes.append(f"{origin[new_key]} and {key} both map to {new_key}")
        out[new_key] = value
        origin[new_key] = key
    if clashes:
        raise ConversionError(unexpected=clashes, context="duplicate keys after renaming")
    return out


def _shape_of(value) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


# Columns copied at a time by `contiguous`: 16 float32 values are one 64-byte cache line.
_COLUMNS_PER_COPY = 16


def contiguous(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`array` as a C-contiguous array of `dtype` (the same array when it already is one
    of that dtype).

    A dense layer's weight is transposed between the layouts, and NumPy copies a
    transposed (column-major) 2-D view at about 0.5-0.7 GB/s here. Copying a few columns
    at a time writes whole cache lines of the result instead: 2.8x faster over a large
    model's dense weights (BENCHMARKS.md, benchmarks/convert_copy.py).

    Args:
      array: Any NumPy array (a transposed view, a slice, a contiguous array).
      dtype: The result's dtype (values are cast as `np.ascontiguousarray` casts them).

    Returns:
      A C-contiguous array equal to `array.astype(dtype)`.
    """
    if array.ndim != 2 or array.flags.c_contiguous or not array.flags.f_contiguous:
        return np.ascontiguousarray(array, dtype=dtype)
    out = np.empty(array.shape, dtype)
    for start in range(0, array.shape[1], _COLUMNS_PER_COPY):
        out[:, start : start + _COLUMNS_PER_COPY] = array[:, start : start + _COLUMNS_PER_COPY]
    return out


def torch_to_flax(
    state_dict: Mapping[str, np.ndarray],
    expected: Mapping[str, object],
    rules: Sequence[Rule],
    context: str = "",
) -> dict[str, np.ndarray]:
    """Converts PyTorch-named arrays into flat Flax parameters, checked against `expected`.

    Args:
      state_dict: NumPy arrays under the table's PyTorch names.
      expected: flat Flax path ('a/b/kernel') -> anything with `.shape` and `.dtype`
        (the leaves of `jax.eval_shape(model.init, ...)`).
      rules: the mapping table.
      context: a few words naming the conversion, for the error message.

    Returns:
      Flat Flax path -> array, in the expected dtype.

    Raises:
      ConversionError: listing every key without a rule or target in the model
        (unexpected), every expected path left unfilled (missing), and every
        rank or shape mismatch (mis-shaped), all at once.
    """
    compiled = _compile(rules)
    out: dict[str, np.ndarray] = {}
    unexpected, mismatched = [], []
    # Paths whose source was mis-shaped: reported once, as mis-shaped, not also as missing.
    explained: set[str] = set()
    for key, value in state_dict.items():
        found = _lookup(key, compiled, "torch")
        if found is None:
            unexpected.append(f"{key} (no mapping rule)")
            continue
        entry, groups = found
        path = entry.flax.fill(groups)
        if path not in expected:
            unexpected.append(f"{key} (-> {path}, not a parameter of this model)")
            continue
        transform = entry.rule.transform
        explained.add(path)
        if value.ndim != transform.torch_ndim:
            mismatched.append(
                f"{key}: rank {value.ndim} {_shape_of(value)}, {transform.name} needs rank "
                f"{transform.torch_ndim}"
            )
            continue
        array = transform.to_flax(np.asarray(value))
        want = expected[path]
        if _shape_of(array) != _shape_of(want):
            mismatched.append(
                f"{key} -> {path}: got {_shape_of(array)} after {transform.name}, "
                f"model expects {_shape_of(want)}"
            )
            continue
        out[path] = contiguous(array, np.dtype(want.dtype))
    missing = [path for path in expected if path not in explained]
    if unexpected or mismatched or missing:
        raise ConversionError(missing, unexpected, mismatched, context)
    return out


def flax_to_torch(
    flat_params: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    context: str = "",
) -> dict[str, np.ndarray]:
    """Converts flat Flax parameters back to PyTorch-named arrays (canonical HF names).

    Raises:
      ConversionError: listing every Flax path that no rule covers.
    """
    compiled = _compile(rules)
    out, unexpected = {}, []
    for path, value in flat_params.items():
        found = _lookup(path, compiled, "flax")
        if found is None:
            unexpected.append(f"{path} (no mapping rule)")
            continue
        entry, groups = found
        array = entry.rule.transform.to_torch(np.asarray(value))
        out[entry.torch.fill(groups)] = contiguous(array, array.dtype)
    if unexpected:
        raise ConversionError(unexpected=unexpected, context=context)
    return out


def check_params(
    flat_params: Mapping[str, np.ndarray], expected: Mapping[str, object], context: str = ""
) -> None:
    """Checks flat Flax parameters against the expected paths and shapes.

    Raises:
      ConversionError: listing every missing, unexpected and mis-shaped path.
    """
    missing = [path for path in expected if path not in flat_params]
    unexpected = [path for path in flat_params if path not in expected]
    mismatched = [
        f"{path}: got {_shape_of(value)}, model expects {_shape_of(expected[path])}"
        for path, value in flat_params.items()
        if path in expected and _shape_of(value) != _shape_of(expected[path])
    ]
    if missing or unexpected or mismatched:
        raise ConversionError(missing, unexpected, mismatched, context)


def to_tree(flat: Mapping[str, np.ndarray]) -> dict:
    """Flat 'a/b/kernel' -> array to a nested parameter tree of JAX arrays."""
    import jax.numpy as jnp
    from flax.traverse_util import unflatten_dict

    return unflatten_dict({path: jnp.asarray(value) for path, value in flat.items()}, sep="/")


def to_flat_numpy(params: Mapping) -> dict[str, np.ndarray]:
    """A nested parameter tree to flat 'a/b/kernel' -> NumPy array."""
    from flax.traverse_util import flatten_dict

    return {path: np.asarray(value) for path, value in flatten_dict(params, sep="/").items()}
