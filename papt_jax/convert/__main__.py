"""Command line: convert a PyTorch HuBERT checkpoint to Flax, or a Flax one to Hugging Face.

python -m papt_jax.convert --source /ckpt/hubert_large_ll60k.pt --out /ckpt/flax_large
python -m papt_jax.convert --source /ckpt/hubert-base-ls960 --out /ckpt/flax_base
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
    "PyTorch checkpoint: a Hugging Face directory (possibly sharded), a .safetensors/.bin/"
    ".pt file, or a fairseq .pt (pre-training or fine-tuned); with --to_hf, a directory "
    "this tool wrote.",
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
        f"source format: {ckpt.source_format}",
        f"parameters: {api.count_params(ckpt.params):,}",
        f"head kept: {'yes' if ckpt.head_params is not None else 'no'}",
    ]
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


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}", hint="run with --help")
    # Our own steps at INFO; other libraries only when they warn.
    logging.getLogger("papt_jax").setLevel(logging.INFO)
    from papt_jax.convert import api  # Imports JAX: after the flags are known to be fine.

    # Before any work: --out may not be (or hold) the source, nor be unwritable.
    storage.check_output_dir(_OUT.value, "--out", [_SOURCE.value])
    api.check_output_dir(_OUT.value, overwrite=_OVERWRITE.value, converted=not _TO_HF.value)
    if _TO_HF.value:
        ckpt = api.load_converted(_SOURCE.value)
        with storage.staged_dir(_OUT.value) as tmp:  # an earlier output stays until then
            api.export_hf(ckpt.config, ckpt.params, tmp)
        if ckpt.head_params is not None:
            print("note: the pre-training head has no place in a HF HubertModel; not exported")
        print(_summary(ckpt, _OUT.value, "wrote Hugging Face directory"))
        return 0
    ckpt = api.load_pytorch_checkpoint(
        _SOURCE.value, allow_unsafe_pickle=_ALLOW_UNSAFE_PICKLE.value, preset=_PRESET.value
    )
    api.save_converted(ckpt, _OUT.value, overwrite=_OVERWRITE.value)
    print(_summary(ckpt, _OUT.value, "wrote converted Flax checkpoint"))
    return 0


if __name__ == "__main__":
    cli.run(main)
