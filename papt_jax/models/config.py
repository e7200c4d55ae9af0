"""Hyper-parameters of the Flax encoder, of any family (HuBERT, wav2vec2, WavLM, data2vec-audio).

`HubertConfig` is a frozen dataclass so it can be hashed, closed over by jitted
functions and written to JSON next to converted weights. Field names follow
`transformers.HubertConfig` (and its siblings' configs) where a field exists there, which
keeps conversion a matter of copying values. `family` picks the family's pieces
(`models.families`); configs written before families existed have no such field and
read as HuBERT.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

SPEAKER_FUSIONS = ("none", "last", "first", "prefix")
# Encoder families: what differs between them is a few named pieces (`models.families`).
FAMILIES = ("hubert", "wav2vec2", "wavlm", "data2vec_audio")
# Fields that only some families use, with the defaults that leave a model's id unchanged.
FAMILY_FIELDS = {
    "family": "hubert",
    "num_buckets": 320,
    "max_bucket_distance": 800,
    "num_conv_pos_layers": 5,
    "input_shift": 0.0,
    "input_scale": 1.0,
}
FEATURE_EXTRACTOR_NORMS = ("group", "layer")
# `remat` choices: 'none', 'full' (recompute the whole layer in the backward pass) and the
# argument-free policies of `jax.checkpoint_policies` by their JAX names ('nothing_saveable'
# is 'full'; 'checkpoint_dots*' are JAX's older names of 'dots*_saveable').
REMAT_POLICIES = (
    "none",
    "full",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "nothing_saveable",
    "everything_saveable",
    "checkpoint_dots",
    "checkpoint_dots_with_no_batch_dims",
)


def remat_name(value: Any) -> str:
    """A `remat` value as a policy name; booleans from configs written before policies
    existed mean True -> 'full' (what per-layer remat did) and False -> 'none'."""
    if isinstance(value, bool):
        return "full" if value else "none"
    return value


@dataclasses.dataclass(frozen=True)
class HubertConfig:
    """Architecture of a HuBERT encoder plus the speaker-embedding table.

    Attributes:
      hidden_size: Transformer width D.
      num_hidden_layers: Number of Transformer layers L.
      num_attention_heads: Attention heads per layer.
      intermediate_size: Width of the feed-forward block.
      conv_dim: Output channels of each conv of the feature extractor.
      conv_kernel: Kernel size of each conv.
      conv_stride: Stride of each conv.
      conv_bias: Whether the convs have a bias (large: yes, base: no).
      feat_extract_norm: 'group' (GroupNorm after conv 0 only, base) or 'layer'
        (LayerNorm after every conv, large).
      do_stable_layer_norm: Pre-LN Transformer layers with the encoder LayerNorm
        after the stack (large) instead of post-LN with it before (base).
      num_conv_pos_embeddings: Kernel size of the positional conv.
      num_conv_pos_embedding_groups: Groups of the positional conv.
      layer_norm_eps: Epsilon of every norm (PyTorch's 1e-5, not Flax's 1e-6).
      hidden_dropout: Dropout on residual branches and on the encoder input.
      attention_dropout: Dropout on attention probabilities.
      activation_dropout: Dropout after the feed-forward activation.
      feat_proj_dropout: Dropout after the feature projection.
      normalize_waveform: Normalise every waveform to zero mean and unit variance
        over its valid samples inside the model (HuBERT-large expects this; the
        Hugging Face feature extractor does it outside the model).
      num_speakers: Rows of the speaker-embedding table (0: no table).
      speaker_fusion: Where the speaker vector enters: 'none', 'last' (added to
        the Transformer output, the paper's PAPT), 'first' (added to the input of
        the first layer) or 'prefix' (one extra token, dropped from the output).
      dtype: Compute dtype ('float32' or 'bfloat16'); parameters stay float32.
      remat: Which activations of each Transformer layer the backward pass recomputes
        instead of keeping: one of `REMAT_POLICIES` ('none', 'full', 'dots_saveable',
        ...). The booleans of older configs still read (True: 'full', False: 'none').
      scan_layers: Run the Transformer layers as one `nn.scan` with their parameters
        stacked under `encoder/layers` (compiles one layer instead of L); False unrolls
        them as `encoder/layers_{i}` (for debugging). Same function either way;
        `models.stack.to_layout` converts parameters between the two layouts.
      family: 'hubert', 'wav2vec2', 'wavlm' or 'data2vec_audio' (`models.families`).
      num_buckets: WavLM: relative-position buckets (both directions together).
      max_bucket_distance: WavLM: distance in frames beyond which positions share the
        last bucket.
      num_conv_pos_layers: data2vec-audio: convs in its positional-conv stack (each of
        kernel `num_conv_pos_embeddings`).
      input_shift, input_scale: the waveform is mapped to (x - shift) * scale before
        anything else (the MSP-Podcast challenge model's fixed normalisation with its
        training audio's statistics); 0 and 1 leave it alone.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    do_stable_layer_norm: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    normalize_waveform: bool = False
    num_speakers: int = 0
    speaker_fusion: str = "none"
    dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = True
    family: str = "hubert"
    num_buckets: int = 320
    max_bucket_distance: int = 800
    num_conv_pos_layers: int = 5
    input_shift: float = 0.0
    input_scale: float = 1.0

    def __post_init__(self):
        # Lists arrive from JSON and ml_collections; tuples keep the config hashable.
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError(
                "conv_dim, conv_kernel and conv_stride must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if self.feat_extract_norm not in FEATURE_EXTRACTOR_NORMS:
            raise ValueError(
                f"feat_extract_norm must be one of {FEATURE_EXTRACTOR_NORMS}, "
                f"got {self.feat_extract_norm!r}"
            )
        if self.speaker_fusion not in SPEAKER_FUSIONS:
            raise ValueError(
                f"speaker_fusion must be one of {SPEAKER_FUSIONS}, got {self.speaker_fusion!r}"
            )
        if self.speaker_fusion != "none" and self.num_speakers <= 0:
            raise ValueError(f"speaker_fusion={self.speaker_fusion!r} needs num_speakers > 0")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        object.__setattr__(self, "remat", remat_name(self.remat))
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.num_conv_pos_layers < 1:
            raise ValueError(f"num_conv_pos_layers must be >= 1, got {self.num_conv_pos_layers}")
        # Bucketing splits the buckets in two directions, then in exact and log-spaced halves.
        if self.num_buckets < 4 or self.max_bucket_distance <= self.num_buckets // 4:
            raise ValueError(
                f"num_buckets {self.num_buckets} must be >= 4 and max_bucket_distance "
                f"{self.max_bucket_distance} above num_buckets / 4"
            )
        if not (self.input_scale > 0 and math.isfinite(self.input_scale)) or not math.isfinite(
            self.input_shift
        ):
            raise ValueError(
                f"input_scale must be positive and finite and input_shift finite, got "
                f"{self.input_scale} and {self.input_shift}"
            )
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be True or False, got {self.scan_layers!r}")

    @property
    def frame_hop(self) -> int:
        """Samples per encoder frame (320 for HuBERT: 50 Hz at 16 kHz)."""
        hop = 1
        for stride in self.conv_stride:
            hop *= stride
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples seen by one encoder frame (400 for HuBERT); shorter audio has no frame."""
        field, jump = 1, 1
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def num_frames(self, num_samples):
        """Encoder frames produced from `num_samples` samples (works on ints and arrays)."""
        length = num_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            length = (length - kernel) // stride + 1
        return length if not isinstance(length, int) else max(length, 0)

    def replace(self, **changes: Any) -> HubertConfig:
        """Returns a copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def identity_json(self) -> str:
        """`to_json()` of what decides the encoder's outputs, for model ids.

        `remat` and `scan_layers` change how the encoder is computed, not what: the text
        leaves out `scan_layers` and records `remat` as false, as every config did before
        remat policies existed, so models saved before then keep their ids.
        """
        values = self.to_dict()
        values.pop("scan_layers")
        for key, default in FAMILY_FIELDS.items():
            if values[key] == default:
                values.pop(key)
        values["remat"] = False
        return json.dumps(values, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HubertConfig:
        """Builds a config from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown HubertConfig fields: {unknown}")
        return cls(**dict(values))


# The Hugging Face config keys we copy one-to-one.
MODEL_PRESETS: dict[str, HubertConfig] = {
    # facebook/hubert-base-ls960 (fairseq hubert_base_ls960.pt).
    "base": HubertConfig(),
    # facebook/hubert-large-ll60k (fairseq hubert_large_ll60k.pt).
    "large": HubertConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        normalize_waveform=True,
    ),
    # A small encoder with HuBERT's 320-sample hop, for the embedded demo corpus:
    # trainable from scratch on two CPU cores in minutes.
    "small": HubertConfig(
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=768,
        conv_dim=(128,) * 7,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        hidden_dropout=0.05,
        attention_dropout=0.05,
        activation_dropout=0.0,
    ),
    # Tests: same conv strides (so frame counts are real), tiny widths.
    "tiny": HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    ),
}


_BASE_SIZE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
_LARGE_SIZE = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
)
_STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True)
# The published architectures of the other families (their HF config.json); dropout rates
# are transformers' defaults. Waveform normalisation as the pre-training recipes had it
# (fairseq's and the WavLM release's `normalize`); a converted folder takes it from its
# own preprocessor_config.json instead.
MODEL_PRESETS.update(
    {
        "hubert-base": MODEL_PRESETS["base"],
        "hubert-large": MODEL_PRESETS["large"],
        # facebook/wav2vec2-base, facebook/wav2vec2-large (LS-960): group norm, post-LN.
        "wav2vec2-base": HubertConfig(family="wav2vec2", **_BASE_SIZE),
        "wav2vec2-large": HubertConfig(family="wav2vec2", **_LARGE_SIZE),
        # facebook/wav2vec2-large-lv60, -large-robust, -xls-r-300m: stable layer norm.
        "wav2vec2-large-lv60": HubertConfig(
            family="wav2vec2", conv_bias=True, normalize_waveform=True, **_LARGE_SIZE, **_STABLE
        ),
        # microsoft/wavlm-base, -base-plus (one architecture), -large (no conv bias).
        "wavlm-base": HubertConfig(family="wavlm", **_BASE_SIZE),
        "wavlm-base-plus": HubertConfig(family="wavlm", **_BASE_SIZE),
        "wavlm-large": HubertConfig(
            family="wavlm", normalize_waveform=True, **_LARGE_SIZE, **_STABLE
        ),
        # facebook/data2vec-audio-base, -large: LayerNorm extractor, post-LN, 5 pos convs.
        "data2vec-audio-base": HubertConfig(
            family="data2vec_audio",
            feat_extract_norm="layer",
            num_conv_pos_embeddings=19,
            num_conv_pos_layers=5,
            normalize_waveform=True,
            **_BASE_SIZE,
        ),
        "data2vec-audio-large": HubertConfig(
            family="data2vec_audio",
            feat_extract_norm="layer",
            num_conv_pos_embeddings=19,
            num_conv_pos_layers=5,
            normalize_waveform=True,
            **_LARGE_SIZE,
        ),
    }
)
# The embedded corpus's small and test sizes of every family.
for _family, _extra in (
    ("wav2vec2", {}),
    ("wavlm", {}),
    ("data2vec_audio", dict(feat_extract_norm="layer", num_conv_pos_layers=2)),
):
    for _size in ("small", "tiny"):
        _name = f"{_family.replace('_', '-')}-{_size}"
        MODEL_PRESETS[_name] = MODEL_PRESETS[_size].replace(family=_family, **_extra)


def get_preset(name: str, **overrides: Any) -> HubertConfig:
    """Returns preset `name` ('base', 'large', 'wavlm-large', ...) with `overrides`."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    return MODEL_PRESETS[name].replace(**overrides)
