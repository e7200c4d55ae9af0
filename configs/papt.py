"""PAPT: personalized adaptive pre-training, then fine-tuning, PLDC and evaluation.

The paper's setting (HuBERT-large, MSP-Podcast v1.6, speaker vectors added to the
Transformer output). Needs the corpus and a converted HuBERT-large:

  python -m papt_jax.convert --source /path/to/hubert-large-ll60k --out ckpt/hubert_large
  python -m papt_jax.convert --source /path/to/hubert_base_ls960.pt --out ckpt/hubert_base
  python -m papt_jax.main --config=configs/papt.py --workdir=runs/papt \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.data.new_corpus_dir=/data/MSP-Podcast-1.10 \
      --config.model.init=converted:ckpt/hubert_large \
      --config.pseudo_labels.teacher=converted:ckpt/hubert_base

Embedded synthetic corpus (no downloads; the README gives its measured time and results):

  python -m papt_jax.main --config=configs/papt.py:demo --workdir=runs/papt_demo

`:smoke` is a tiny version for the tests (a few minutes on 2 CPU cores). Every setting and
its meaning: `python -m papt_jax.main --config=configs/papt.py --show_config`.
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "PAPT-FT"
    config.pretrain.speaker_fusion = "last"
    if variant:
        apply_embedded_corpus(config, variant)
    return config
