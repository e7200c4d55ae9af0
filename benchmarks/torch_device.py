"""The `--torch_device` check the benchmarks that time PyTorch share."""

from __future__ import annotations

import argparse


def check_torch_device(parser: argparse.ArgumentParser, name: str) -> None:
    """Refuses (argparse's exit 2) a device torch cannot parse, or CUDA without a GPU build."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        parser.error(f"--torch_device {name!r}: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--torch_device cuda: this torch build sees no GPU (install a CUDA build)")
