"""PAPT with a WavLM encoder (microsoft/wavlm-base-plus, -large, or the MSP-Podcast
challenge's WavLM-large emotion model), continued with WavLM's own objective: masked
prediction of pseudo-labels on inputs with utterance mixing (`pretrain.objective='auto'`,
`pretrain.utterance_mixing='auto'`, `pretrain.mixing_prob`), then fine-tuning, PLDC and
evaluation.

  python -m papt_jax.convert --source /path/to/wavlm-large --out ckpt/wavlm_large
  python -m papt_jax.main --config=configs/papt_wavlm.py --workdir=runs/papt_wavlm \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.data.new_corpus_dir=/data/MSP-Podcast-1.10 \
      --config.model.init=converted:ckpt/wavlm_large \
      --config.pseudo_labels.teacher=converted:ckpt/hubert_base

Without mixing (HuBERT's masked prediction exactly): --config.pretrain.utterance_mixing=off.
With noise as well as speech, as the paper (DNS challenge noise; `pretrain.noise_prob` of
the mixed utterances take noise): --config.pretrain.noise_dir=/data/dns_noise.

Embedded corpus (a small WavLM bootstrapped from scratch; `:smoke` for the tests):

  python -m papt_jax.main --config=configs/papt_wavlm.py:demo --workdir=runs/wavlm_demo
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "PAPT-FT (WavLM)"
    config.pretrain.speaker_fusion = "last"
    if variant:
        apply_embedded_corpus(config, variant, family="wavlm")
    return config
