"""PAPT with a wav2vec 2.0 encoder, continued with wav2vec 2.0's own contrastive objective
(`pretrain.objective='auto'`; no pseudo-labels, so no teacher), then fine-tuning, PLDC and
evaluation. A `Wav2Vec2ForPreTraining` checkpoint (facebook/wav2vec2-large-robust) keeps
its quantizer, so pre-training continues where it stopped; a checkpoint without one
(audEERING's w2v2-L-robust-12 emotion model) gets a fresh quantizer.

  python -m papt_jax.convert --source /path/to/wav2vec2-large-robust --out ckpt/w2v2_large_robust
  python -m papt_jax.main --config=configs/papt_wav2vec2.py --workdir=runs/papt_wav2vec2 \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.data.new_corpus_dir=/data/MSP-Podcast-1.10 \
      --config.model.init=converted:ckpt/w2v2_large_robust

The recipe values are fairseq's wav2vec 2.0 large recipe (wav2vec2_large_librivox.yaml:
mask_prob 0.65, loss_weights [0.1, 0], latent_temp [2.0, 0.1, 0.999995]). To train with
HuBERT's masked prediction instead: --config.pretrain.objective=masked_prediction and a
teacher, --config.pseudo_labels.teacher=converted:ckpt/hubert_base.

Embedded corpus (a small wav2vec2 bootstrapped contrastively from scratch; `:smoke` for the
tests):

  python -m papt_jax.main --config=configs/papt_wav2vec2.py:demo --workdir=runs/w2v_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "PAPT-FT (wav2vec2)"
    config.pretrain.speaker_fusion = "last"
    config.pretrain.mask_prob = 0.65  # fairseq wav2vec 2.0 recipes (HuBERT's: 0.8)
    config.pretrain.features_pen_weight = 0.0  # large recipe loss_weights [0.1, 0]
    config.pretrain.gumbel_temp_min = 0.1  # large recipe latent_temp [2.0, 0.1, 0.999995]
    if variant:
        apply_embedded_corpus(config, variant, family="wav2vec2")
    return config
