"""PAPT with a data2vec-audio encoder (facebook/data2vec-audio-base, -large), then
fine-tuning, PLDC and evaluation.

  python -m papt_jax.convert --source /path/to/data2vec-audio-large --out ckpt/d2v_large
  python -m papt_jax.main --config=configs/papt_data2vec.py --workdir=runs/papt_data2vec \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.data.new_corpus_dir=/data/MSP-Podcast-1.10 \
      --config.model.init=converted:ckpt/d2v_large \
      --config.pseudo_labels.teacher=converted:ckpt/hubert_base

Embedded corpus (a small data2vec-audio bootstrapped from scratch; `:smoke` for the tests):

  python -m papt_jax.main --config=configs/papt_data2vec.py:demo --workdir=runs/d2v_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "PAPT-FT (data2vec-audio)"
    config.pretrain.speaker_fusion = "last"
    if variant:
        apply_embedded_corpus(config, variant, family="data2vec_audio")
    return config
