"""PAPT with a wav2vec 2.0 encoder (e.g. audEERING's w2v2-L-robust-12 emotion model, or
facebook/wav2vec2-large-robust), then fine-tuning, PLDC and evaluation.

  python -m papt_jax.convert --source /path/to/wav2vec2-large-robust-12-ft-emotion-msp-dim \
      --out ckpt/w2v2_L_robust_12
  python -m papt_jax.main --config=configs/papt_wav2vec2.py --workdir=runs/papt_wav2vec2 \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.data.new_corpus_dir=/data/MSP-Podcast-1.10 \
      --config.model.init=converted:ckpt/w2v2_L_robust_12 \
      --config.pseudo_labels.teacher=converted:ckpt/hubert_base

Embedded corpus (a small wav2vec2 bootstrapped from scratch; `:smoke` for the tests):

  python -m papt_jax.main --config=configs/papt_wav2vec2.py:demo --workdir=runs/w2v_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "PAPT-FT (wav2vec2)"
    config.pretrain.speaker_fusion = "last"
    if variant:
        apply_embedded_corpus(config, variant, family="wav2vec2")
    return config
