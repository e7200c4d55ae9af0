"""WavLM's official release files (`WavLM-Base.pt`, `WavLM-Base+.pt`, `WavLM-Large.pt`).

Published beside the WavLM paper's code (github.com/microsoft/unilm, wavlm/), each is a
`torch.save`d dict `{'cfg': dict, 'model': OrderedDict}`: `cfg` holds the options of
the release's `WavLMConfig` (fairseq's names: `encoder_layers`, `extractor_mode`,
`layer_norm_first`, `conv_feature_layers`, `normalize`, plus `relative_position_embedding`,
`num_buckets`, `max_distance`, `gru_rel_pos`), `model` the `WavLM` module's state dict in
the release's naming (see `papt_jax.convert.families.wavlm.RELEASE_RENAMES`).

It looks like a fairseq training state (a `model` and a `cfg`), so it is recognised
first: a flat `cfg` (no `model`/`task` sections) with WavLM's options, or weights
named as only WavLM names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papt_jax.convert import fairseq_config
from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.safe_unpickle import plain

# Options only WavLM's config has, and key fragments only WavLM's weights have.
_WAVLM_OPTIONS = ("relative_position_embedding", "gru_rel_pos", "num_buckets", "max_distance")
_WAVLM_KEYS = (
    ".self_attn.grep_linear.",
    ".self_attn.grep_a",
    ".self_attn.relative_attention_bias.",
)


def release_cfg(obj: Any) -> dict[str, Any] | None:
    """The release's `cfg` as a plain dict if `obj` is a WavLM release file, else None."""
    if not isinstance(obj, Mapping) or "model" not in obj or "cfg" not in obj:
        return None
    cfg = plain(obj["cfg"])
    if not isinstance(cfg, Mapping) or "model" in cfg or "task" in cfg:
        return None  # A fairseq training state: its config has sections.
    model = obj["model"]
    names_wavlm = isinstance(model, Mapping) and any(
        fragment in key for key in model for fragment in _WAVLM_KEYS
    )
    if names_wavlm or any(option in cfg for option in _WAVLM_OPTIONS):
        return dict(cfg)
    return None


def config_values(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The encoder config values of a release `cfg` (its own `normalize` decides the input).

    Raises:
      CheckpointFormatError: another model (`_name`), or options this port does not
        implement (all named).
    """
    name = cfg.get("_name")
    if name is not None and name != "wavlm":
        raise CheckpointFormatError(f"{where}: the config names a {name!r} model, not WavLM")
    normalize = fairseq_config.get_bool(cfg, "normalize", False, where)
    return fairseq_config.encoder_values(cfg, normalize, "wavlm", where)
