"""What starting a training stage costs in initialisation: the whole model's or the head's.

Usage:

    python benchmarks/init_programs.py [--model base] [--repeat 2]   # any model preset

Pre-training and fine-tuning start from an encoder they are given, so they initialise
only what sits beside it (`pretrain.init_head_params`, `finetune.init_head_variables`);
the whole model's initialisation (`init_params`, `init_variables`) is the reference, as
these stages called it before. Each is timed cold (`jax.clear_caches()` first): trace,
compile and run for one key, on the model preset given (a HuBERT pre-training model with
a 500-cluster head; a regression model). Printed per repeat: both seconds and their ratio
(the whole over the head's), with the load average (other jobs slow both).
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from papt_jax.models import MODEL_PRESETS, get_preset
from papt_jax.train import finetune, pretrain


def models(preset: str):
    config = get_preset(preset)
    loss = pretrain.PretrainLossConfig(mask_prob=0.8, mask_length=10, features_pen_weight=10.0)
    head, _ = pretrain.fresh_head(num_clusters=500, final_dim=256)
    pretraining = pretrain.build_model(
        pretrain.PretrainModelConfig(encoder_config=config, head_config=head, loss=loss)
    )
    regression = finetune.RegressorConfig(
        encoder_config=config,
        dimension="arousal",
        label_scaling="unit",
        head_dropout=0.1,
        freeze_feature_extractor=True,
    ).model()
    return {
        "pre-training": (pretraining, pretrain.init_params, pretrain.init_head_params),
        "fine-tuning": (regression, finetune.init_variables, finetune.init_head_variables),
    }


def cold_seconds(init, model) -> float:
    jax.clear_caches()
    start = time.perf_counter()
    jax.block_until_ready(init(model, jax.random.PRNGKey(0)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_PRESETS), default="base")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    for name, (model, whole, head) in models(args.model).items():
        for i in range(args.repeat):
            whole_s, head_s = cold_seconds(whole, model), cold_seconds(head, model)
            print(
                f"{args.model} {name}, repeat {i + 1}: whole model {whole_s:.2f} s, "
                f"head only {head_s:.2f} s, ratio {whole_s / head_s:.1f}x "
                f"(load average {os.getloadavg()[0]:.1f})"
            )


if __name__ == "__main__":
    main()
