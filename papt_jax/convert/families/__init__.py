"""The encoder families' namings: one small module per family, one shared base.

`FAMILIES` maps a family name ('hubert', 'wav2vec2', 'wavlm', 'data2vec_audio') to its
`FamilyNaming`; `by_model_type` finds one from an HF `config.json`'s `model_type`.
A new family is a new module here with its `NAMING`, listed below.
"""

from __future__ import annotations

from papt_jax.convert.families import data2vec_audio, hubert, wav2vec2, wavlm
from papt_jax.convert.families.naming import FamilyNaming

FAMILIES: dict[str, FamilyNaming] = {
    module.NAMING.family: module.NAMING for module in (hubert, wav2vec2, wavlm, data2vec_audio)
}


def by_model_type(model_type: str) -> FamilyNaming | None:
    """The family whose HF `model_type` this is, or None."""
    for naming in FAMILIES.values():
        if naming.hf_model_type == model_type:
            return naming
    return None


__all__ = ["FAMILIES", "FamilyNaming", "by_model_type"]
