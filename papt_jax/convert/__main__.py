"""Command line: convert a PyTorch encoder checkpoint to Flax, or a Flax one to Hugging Face.

python -m papt_jax.convert --source /ckpt/hubert_large_ll60k.pt --out /ckpt/flax_large
python -m papt_jax.convert --source /ckpt/wavlm-large --out /ckpt/wavlm_large
python -m papt_jax.convert --source /ckpt/WavLM-Large.pt --out /ckpt/wavlm_large
python -m papt_jax.convert --source /ckpt/wav2vec2-large-robust-12-ft-emotion-msp-dim \
    --out /ckpt/w2v2_L_robust_12
python -m papt_jax.convert --source /ckpt/MSP-Podcast_Challenge/model/dim_ser/wavLM_adamW/7 \
    --out /ckpt/msp_wavlm
python -m papt_jax.convert --source model.safetensors --preset base --out /ckpt/flax_base
python -m papt_jax.convert --to_hf --source /ckpt/flax_large --out /ckpt/hf_large
"""

from __future__ import annotations

import dataclasses
import logging

from absl import flags

from papt_jax import cli, storage
from papt_jax.errors import UserError
from papt_jax.models.config import MODEL_PRESETS

_SOURCE = flags.DEFINE_string(
    "source",
    None,
    "PyTorch checkpoint of HuBERT, wav2vec2, WavLM or data2vec-audio: a Hugging Face "
    "directory (possibly sharded, a task model's too), a .safetensors/.bin/.pt file, a "
    "fairseq .pt (HuBERT or wav2vec2, pre-training or fine-tuned), a WavLM release .pt, "
    "audEERING's emotion-model folder or the MSP-Podcast challenge model (release folder or "
    "Hugging Face package); with --to_hf, a directory this tool wrote.",
    required=True,
)
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_PRESET = flags.DEFINE_enum(
    "preset",
    None,
    sorted(MODEL_PRESETS),
    "Architecture for a bare state dict without a config (ignored when the checkpoint "
    "carries its own config).",
)
_ALLOW_UNSAFE_PICKLE = flags.DEFINE_bool(
    "allow_unsafe_pickle",
    False,
    "Fully unpickle a file that names classes outside the safe list. This runs code from "
    "the file: trusted files only. Published fairseq and Hugging Face checkpoints do not "
    "need it.",
)
_BACKBONE_CONFIG = flags.DEFINE_string(
    "backbone_config",
    None,
    "The MSP-Podcast challenge model only: the Hugging Face config.json of its WavLM (its "
    "files do not carry it; default: microsoft/wavlm-large's, which the challenge trains).",
)
_TO_HF = flags.DEFINE_bool(
    "to_hf", False, "Export a converted Flax directory (--source) as a Hugging Face directory."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a non-empty output directory (one this tool wrote)."
)


def _summary(ckpt, out: str, action: str) -> str:
    from papt_jax.convert import api

    config = ckpt.config
    lines = [
        f"{action}: {out}",
        f"encoder family: {config.family}",
        f"source format: {ckpt.source_format}",
        f"parameters: {api.count_params(ckpt.params):,}",
        f"head kept: {'yes' if ckpt.head_params is not None else 'no'}",
    ]
    if ckpt.quantizer_config is not None:
        q = ckpt.quantizer_config
        lines.append(
            f"quantizer kept: {q.num_codevector_groups} x {q.num_codevectors_per_group} "
            f"codevectors of {q.codevector_dim // q.num_codevector_groups}, projected to "
            f"{q.proj_codevector_dim}"
        )
    if ckpt.emotion_head_config is not None:
        e = ckpt.emotion_head_config
        low, high = e.label_range
        lines.append(f"emotion head: {e.kind}, predicts {', '.join(e.labels)} on {low:g}..{high:g}")
    if ckpt.head_config is not None:
        head = ckpt.head_config
        lines.append(
            f"head: final_dim={head.final_dim} label rows={head.num_label_rows} "
            f"(offset {head.label_offset}, {api.count_params(ckpt.head_params):,} params)"
        )
    lines.extend(f"note: {note}" for note in ckpt.notes)
    lines.append("config:")
    lines.extend(f"  {key} = {value}" for key, value in dataclasses.asdict(config).items())
    return "\n".join(lines)


def _read_backbone(path: str) -> dict:
    import json
    from pathlib import Path

    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--backbone_config {path}: not a readable JSON file ({err})") from err
    if not isinstance(value, dict):
        raise UserError(f"--backbone_config {path}: must hold a JSON object (a config.json)")
    return value


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}", hint="run with --help")
    # Our own steps at INFO; other libraries only when they warn.
    logging.getLogger("papt_jax").setLevel(logging.INFO)
    from papt_jax.convert import (
        api,  # Imports JAX: after the flags are known to be fine.
    )

    # Before any work: --out may not be (or hold) the source, nor be unwritable.
    inputs = [_SOURCE.value] + ([_BACKBONE_CONFIG.value] if _BACKBONE_CONFIG.value else [])
    storage.check_output_dir(_OUT.value, "--out", inputs)
    api.check_output_dir(_OUT.value, overwrite=_OVERWRITE.value, converted=not _TO_HF.value)
    if _TO_HF.value:
        ckpt = api.load_converted(_SOURCE.value)
        with storage.staged_dir(_OUT.value) as tmp:  # an earlier output stays until then
            api.export_hf(ckpt.config, ckpt.params, tmp)
        for kind, params in (
            ("pre-training head", ckpt.head_params),
            ("quantizer", ckpt.quantizer_params),
            ("emotion head", ckpt.emotion_head_params),
        ):
            if params is not None:
                print(f"note: the {kind} has no place in the HF encoder model; not exported")
        if ckpt.config.input_shift != 0.0 or ckpt.config.input_scale != 1.0:
            print(
                f"note: the model expects (x - {ckpt.config.input_shift:g}) * "
                f"{ckpt.config.input_scale:g} as input; preprocessor_config.json records it, "
                "transformers does not apply it"
            )
        print(_summary(ckpt, _OUT.value, "wrote Hugging Face directory"))
        return 0
    backbone = None
    if _BACKBONE_CONFIG.value:
        backbone = _read_backbone(_BACKBONE_CONFIG.value)
    ckpt = api.load_pytorch_checkpoint(
        _SOURCE.value,
        allow_unsafe_pickle=_ALLOW_UNSAFE_PICKLE.value,
        preset=_PRESET.value,
        backbone_config=backbone,
    )
    api.save_converted(ckpt, _OUT.value, overwrite=_OVERWRITE.value)
    print(_summary(ckpt, _OUT.value, "wrote converted Flax checkpoint"))
    return 0


if __name__ == "__main__":
    cli.run(main)
