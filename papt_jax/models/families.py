"""The encoder families as named pieces of the one shared encoder (`models.hubert`).

Everything else (feature extractor, feature projection, encoder LayerNorm, layer stack,
speaker fusion, masking, heads) is shared. A family is its entry below:

* `layer`: the Transformer layer the stack runs (WavLM's gates its attention bias);
* `positional`: the module adding relative positional information to the layer input,
  called `(x, mask)` as `encoder/pos_conv_embed` (data2vec-audio's conv stack; the others'
  weight-normed conv);
* `attention_bias`: None, or a module computing one additive attention bias, once per
  forward pass, that the stack hands to every layer (`encoder/rel_attn_embed`, WavLM).

A future family is a small module with its pieces, and an entry here.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from papt_jax.models.data2vec_audio import PositionalConvStack
from papt_jax.models.layers import EncoderLayer, PositionalConvEmbedding
from papt_jax.models.wavlm import RelativePositionBias, WavLMEncoderLayer


@dataclasses.dataclass(frozen=True)
class FamilyPieces:
    """What one family puts into the shared encoder (module docstring)."""

    layer: type[nn.Module]
    positional: type[nn.Module]
    attention_bias: type[nn.Module] | None = None


_WAV2VEC2 = FamilyPieces(layer=EncoderLayer, positional=PositionalConvEmbedding)
PIECES: dict[str, FamilyPieces] = {
    # HuBERT's encoder is wav2vec2's (transformers built it from wav2vec2's modules).
    "hubert": _WAV2VEC2,
    "wav2vec2": _WAV2VEC2,
    "wavlm": FamilyPieces(
        layer=WavLMEncoderLayer,
        positional=PositionalConvEmbedding,
        attention_bias=RelativePositionBias,
    ),
    "data2vec_audio": FamilyPieces(layer=EncoderLayer, positional=PositionalConvStack),
}
