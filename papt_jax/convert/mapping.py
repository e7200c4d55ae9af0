"""The PyTorch <-> Flax parameter mapping for HuBERT: one table, transform hooks, checks.

`HF_RULES` is the single source of truth: each row pairs a Hugging Face
`state_dict` key pattern with a Flax parameter path pattern (`{i}` stands for a
layer index) and names the transform that turns the PyTorch array into the Flax
one (and back). Every other naming is a rename layer onto the HF naming:

* `LEGACY_WEIGHT_NORM_RENAMES`: `torch.nn.utils.weight_norm` keys (`weight_g`,
  `weight_v`, older HF checkpoints) -> the `parametrizations.weight.original{0,1}`
  keys that current `transformers` writes.
* `FAIRSEQ_RENAMES`: fairseq HuBERT (`fairseq/models/hubert/hubert.py`, modules from
  `fairseq/models/wav2vec/wav2vec2.py`) -> HF. The pre-training head of fairseq
  checkpoints has its own table, `HEAD_RULES`, onto `PretrainHead`'s parameters.

Conversion is checked against the shapes the Flax model expects (from
`jax.eval_shape(model.init, ...)`): every missing, unexpected or mis-shaped key is
collected and reported in one `ConversionError`.

The table names Transformer layers one by one (`encoder/layers_{i}`), as PyTorch does. A
scanned model keeps them stacked (`encoder/layers`, leading layer axis): `convert.api`
converts through the per-layer layout with `models.stack.to_layout`, so this table never
changes with the layout.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from papt_jax.convert.conversion_errors import ConversionError

logger = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of a mapping table: `torch` key pattern <-> `flax` path pattern."""

    torch: str
    flax: str
    transform: Transform


def _dense(torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
    return (
        Rule(f"{torch_prefix}.weight", f"{flax_prefix}/kernel", TRANSPOSE_DENSE),
        Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias", IDENTITY_1D),
    )


def _norm(torch_prefix: str, flax_prefix: str) -> tuple[Rule, ...]:
    return (
        Rule(f"{torch_prefix}.weight", f"{flax_prefix}/scale", IDENTITY_1D),
        Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias", IDENTITY_1D),
    )


_CONV = "feature_extractor.conv_layers.{i}"
_FCONV = "feature_extractor/conv_layers_{i}"
_LAYER = "encoder.layers.{i}"
_FLAYER = "encoder/layers_{i}"
_POS = "encoder.pos_conv_embed.conv"
_FPOS = "encoder/pos_conv_embed/conv"

# Hugging Face `HubertModel` naming <-> `papt_jax.models.HubertModel` parameters.
HF_RULES: tuple[Rule, ...] = (
    Rule("masked_spec_embed", "masked_spec_embed", IDENTITY_1D),
    Rule(f"{_CONV}.conv.weight", f"{_FCONV}/conv/kernel", TRANSPOSE_CONV),
    Rule(f"{_CONV}.conv.bias", f"{_FCONV}/conv/bias", IDENTITY_1D),
    # GroupNorm (conv 0, 'group') or LayerNorm (every conv, 'layer'): same names.
    *_norm(f"{_CONV}.layer_norm", f"{_FCONV}/layer_norm"),
    *_norm("feature_projection.layer_norm", "feature_projection/layer_norm"),
    *_dense("feature_projection.projection", "feature_projection/projection"),
    # Weight norm over the kernel axis: gain g and direction v, kept apart in both models.
    Rule(f"{_POS}.parametrizations.weight.original0", f"{_FPOS}/weight_g", SQUEEZE_G),
    Rule(f"{_POS}.parametrizations.weight.original1", f"{_FPOS}/weight_v", TRANSPOSE_CONV),
    Rule(f"{_POS}.bias", f"{_FPOS}/bias", IDENTITY_1D),
    *_norm("encoder.layer_norm", "encoder/layer_norm"),
    *_dense(f"{_LAYER}.attention.q_proj", f"{_FLAYER}/attention/q_proj"),
    *_dense(f"{_LAYER}.attention.k_proj", f"{_FLAYER}/attention/k_proj"),
    *_dense(f"{_LAYER}.attention.v_proj", f"{_FLAYER}/attention/v_proj"),
    *_dense(f"{_LAYER}.attention.out_proj", f"{_FLAYER}/attention/out_proj"),
    *_norm(f"{_LAYER}.layer_norm", f"{_FLAYER}/layer_norm"),
    *_dense(
        f"{_LAYER}.feed_forward.intermediate_dense", f"{_FLAYER}/feed_forward/intermediate_dense"
    ),
    *_dense(f"{_LAYER}.feed_forward.output_dense", f"{_FLAYER}/feed_forward/output_dense"),
    *_norm(f"{_LAYER}.final_layer_norm", f"{_FLAYER}/final_layer_norm"),
    # Not part of HF HuBERT: the PAPT speaker table, stored beside an exported HF model.
    Rule("speaker_embedding.weight", "speaker_embedding/embedding", IDENTITY_2D),
)

# fairseq HuBERT's pre-training head <-> `papt_jax.models.heads.PretrainHead` parameters.
HEAD_RULES: tuple[Rule, ...] = (
    *_dense("final_proj", "final_proj"),
    Rule("label_embs_concat", "label_embs_concat", IDENTITY_2D),
)

# Renames are (source pattern, HF pattern) pairs applied before `HF_RULES`.
LEGACY_WEIGHT_NORM_RENAMES: tuple[tuple[str, str], ...] = (
    (f"{_POS}.weight_g", f"{_POS}.parametrizations.weight.original0"),
    (f"{_POS}.weight_v", f"{_POS}.parametrizations.weight.original1"),
)

# fairseq names, checked against fairseq's source: ConvFeatureExtractionModel blocks are
# Sequential(conv, dropout, norm, gelu) with the LayerNorm itself wrapped as
# Sequential(TransposeLast, Fp32LayerNorm, TransposeLast); the positional conv is
# Sequential(weight-normed conv, SamePad, GELU); `layer_norm` normalises the CNN features.
# One way only (fairseq -> HF): a reverse rename could not tell the two norm modes apart.
FAIRSEQ_RENAMES: tuple[tuple[str, str], ...] = (
    ("mask_emb", "masked_spec_embed"),
    (f"{_CONV}.0.weight", f"{_CONV}.conv.weight"),
    (f"{_CONV}.0.bias", f"{_CONV}.conv.bias"),
    # extractor_mode='default': Fp32GroupNorm at index 2 of conv 0 only.
    *(
        (
            f"feature_extractor.conv_layers.0.2.{kind}",
            f"feature_extractor.conv_layers.0.layer_norm.{kind}",
        )
        for kind in ("weight", "bias")
    ),
    # extractor_mode='layer_norm': the LayerNorm is item 1 of the block's item 2.
    (f"{_CONV}.2.1.weight", f"{_CONV}.layer_norm.weight"),
    (f"{_CONV}.2.1.bias", f"{_CONV}.layer_norm.bias"),
    ("layer_norm.weight", "feature_projection.layer_norm.weight"),
    ("layer_norm.bias", "feature_projection.layer_norm.bias"),
    ("post_extract_proj.weight", "feature_projection.projection.weight"),
    ("post_extract_proj.bias", "feature_projection.projection.bias"),
    ("encoder.pos_conv.0.weight_g", f"{_POS}.parametrizations.weight.original0"),
    ("encoder.pos_conv.0.weight_v", f"{_POS}.parametrizations.weight.original1"),
    # The same conv saved by a torch that writes weight-norm parametrizations.
    *(
        (f"encoder.pos_conv.0.parametrizations.weight.{p}", f"{_POS}.parametrizations.weight.{p}")
        for p in ("original0", "original1")
    ),
    ("encoder.pos_conv.0.bias", f"{_POS}.bias"),
    ("encoder.layer_norm.weight", "encoder.layer_norm.weight"),
    ("encoder.layer_norm.bias", "encoder.layer_norm.bias"),
    *(
        (f"{_LAYER}.self_attn.{proj}.{kind}", f"{_LAYER}.attention.{proj}.{kind}")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
        for kind in ("weight", "bias")
    ),
    *(
        (f"{_LAYER}.{src}.{kind}", f"{_LAYER}.{dst}.{kind}")
        for src, dst in (
            ("self_attn_layer_norm", "layer_norm"),
            ("fc1", "feed_forward.intermediate_dense"),
            ("fc2", "feed_forward.output_dense"),
            ("final_layer_norm", "final_layer_norm"),
        )
        for kind in ("weight", "bias")
    ),
)

# fairseq pre-training head keys: kept apart from the encoder and converted with HEAD_RULES.
FAIRSEQ_HEAD_KEYS = ("final_proj.weight", "final_proj.bias", "label_embs_concat")

# Downstream heads of HF task models (HubertForCTC, HubertForSequenceClassification):
# not part of the encoder, dropped with a log line that counts them.
HF_DOWNSTREAM_PREFIXES = ("lm_head.", "projector.", "classifier.", "layer_weights")
HF_ENCODER_PREFIX = "hubert."


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


def normalize_hf_keys(
    state_dict: Mapping[str, np.ndarray], notes: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Brings any HF-style HuBERT state dict onto the canonical `HF_RULES` names.

    Strips the `hubert.` prefix of HF task models, drops their downstream heads
    (logged with a count, and described in `notes` when given) and renames legacy
    weight-norm keys.
    """
    if any(k.startswith(HF_ENCODER_PREFIX) for k in state_dict):
        stripped = {}
        for key, value in state_dict.items():
            if key.startswith(HF_ENCODER_PREFIX):
                stripped[key[len(HF_ENCODER_PREFIX) :]] = value
            else:
                stripped[key] = value
        state_dict = stripped
    dropped = sorted(k for k in state_dict if k.startswith(HF_DOWNSTREAM_PREFIXES))
    if dropped:
        logger.warning(
            "dropping %d parameters of a downstream task head (not part of the encoder): %s",
            len(dropped),
            dropped,
        )
        if notes is not None:
            listed = ", ".join(f"{k} {_shape_of(state_dict[k])}" for k in dropped)
            notes.append(f"dropped the downstream task head (not part of the encoder): {listed}")
        state_dict = {k: v for k, v in state_dict.items() if k not in set(dropped)}
    return rename_keys(state_dict, LEGACY_WEIGHT_NORM_RENAMES)


def _shape_of(value) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def torch_to_flax(
    state_dict: Mapping[str, np.ndarray],
    expected: Mapping[str, object],
    rules: Sequence[Rule] = HF_RULES,
    context: str = "",
) -> dict[str, np.ndarray]:
    """Converts PyTorch-named arrays into flat Flax parameters, checked against `expected`.

    Args:
      state_dict: canonical-named NumPy arrays (see `normalize_hf_keys`).
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
        out[path] = np.ascontiguousarray(array, dtype=np.dtype(want.dtype))
    missing = [path for path in expected if path not in explained]
    if unexpected or mismatched or missing:
        raise ConversionError(missing, unexpected, mismatched, context)
    return out


def flax_to_torch(
    flat_params: Mapping[str, np.ndarray],
    rules: Sequence[Rule] = HF_RULES,
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
        out[entry.torch.fill(groups)] = np.ascontiguousarray(
            entry.rule.transform.to_torch(np.asarray(value))
        )
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
