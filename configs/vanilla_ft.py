"""Vanilla-FT: fine-tune the pre-trained encoder directly (no continued pre-training).

  python -m papt_jax.main --config=configs/vanilla_ft.py --workdir=runs/vanilla \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.model.init=converted:ckpt/hubert_large

  python -m papt_jax.main --config=configs/vanilla_ft.py:demo --workdir=runs/vanilla_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "Vanilla-FT"
    config.stages = "corpus,prepare,bootstrap,finetune,evaluate,report"
    config.finetune.init = "model"
    if variant:
        apply_embedded_corpus(config, variant)
    return config
