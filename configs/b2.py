"""B2 (Sridhar & Busso 2022): fine-tuning with speaker-similarity loss weights.

The paper's B2 row: the encoder is fine-tuned directly (as Vanilla-FT), with the
utterances of the training speakers closest to the test speakers weighted up. Closeness:
ComParE functionals (openSMILE), whitened PCA, a Gaussian mixture per speaker, KL
divergence (papt_jax/b2.py lists every choice). It uses the test speakers' audio, not
their labels, and needs a new fine-tuning run for new speakers, so it has no test-c row.

  python -m papt_jax.main --config=configs/b2.py --workdir=runs/b2 \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.model.init=converted:ckpt/hubert_large

  python -m papt_jax.main --config=configs/b2.py:demo --workdir=runs/b2_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "B2"
    config.stages = "corpus,prepare,bootstrap,speaker_weights,finetune,evaluate,report"
    config.finetune.init = "model"
    config.finetune.speaker_weighting = "b2"
    config.evaluate.splits = "test_b"  # B2 adapts to known test speakers only
    if variant:
        apply_embedded_corpus(config, variant)
    return config
