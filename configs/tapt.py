"""TAPT: task-adaptive pre-training without speaker embeddings, then fine-tuning.

The paper's TAPT-FT baseline: identical to configs/papt.py except that no speaker
vector enters the encoder (`speaker_fusion='none'`).

  python -m papt_jax.main --config=configs/tapt.py --workdir=runs/tapt \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.model.init=converted:ckpt/hubert_large \
      --config.pseudo_labels.teacher=converted:ckpt/hubert_base

  python -m papt_jax.main --config=configs/tapt.py:demo --workdir=runs/tapt_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "TAPT-FT"
    config.pretrain.speaker_fusion = "none"
    if variant:
        apply_embedded_corpus(config, variant)
    return config
