"""Command line: convert a PyTorch HuBERT checkpoint to Flax, or a Flax one to Hugging Face.

python -m papt_jax.convert --source /ckpt/hubert_large_ll60k.pt --out /ckpt/flax_large
python -m papt_jax.convert --source /ckpt/hubert-base-ls960 --out /ckpt/flax_base
python -m papt_jax.convert --source model.safetensors --preset base --out /ckpt/flax_base
python -m papt_jax.convert --to-hf --source /ckpt/flax_large --out /ckpt/hf_large
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from papt_jax.convert import api


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m papt_jax.convert",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(__doc__.split("\n")[2:]),
    )
    parser.add_argument(
        "--source",
        required=True,
        help="PyTorch checkpoint (HF dir, .safetensors/.bin/.pt, fairseq .pt); "
        "with --to-hf, a directory written by this tool",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="fully unpickle files the safe loader refuses (runs code from the file: "
        "trusted files only)",
    )
    parser.add_argument(
        "--preset",
        choices=["base", "large"],
        help="architecture for a bare state dict without a config",
    )
    parser.add_argument(
        "--to-hf", action="store_true", help="export a converted Flax dir as a HF directory"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing converted directory"
    )
    return parser.parse_args(argv)


def _summary(ckpt: api.ConvertedCheckpoint, out: str, action: str) -> str:
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
    lines.append("config:")
    lines.extend(f"  {key} = {value}" for key, value in dataclasses.asdict(config).items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # Our own steps at INFO; Orbax/absl chatter only when it is a warning.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("papt_jax").setLevel(logging.INFO)
    if args.to_hf:
        ckpt = api.load_converted(args.source)
        api.export_hf(ckpt.config, ckpt.params, args.out)
        if ckpt.head_params is not None:
            print("note: the pre-training head has no place in a HF HubertModel; not exported")
        print(_summary(ckpt, args.out, "wrote Hugging Face directory"))
        return 0
    ckpt = api.load_pytorch_checkpoint(
        args.source, allow_unsafe_pickle=args.allow_unsafe_pickle, preset=args.preset
    )
    api.save_converted(ckpt, args.out, overwrite=args.overwrite)
    print(_summary(ckpt, args.out, "wrote converted Flax checkpoint"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
