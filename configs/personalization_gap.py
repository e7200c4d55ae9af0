"""The personalization gap (the paper's Figure 1): one point of the experiment.

Fine-tunes the encoder (as Vanilla-FT) on the first K training speakers of one seeded order
(nested subsets), speaker-independent (SI), or speaker-dependent (SD: as many of those
speakers as test-a has are swapped for test-a's speakers, and test-a's utterances join the
training data). Both are evaluated on test-b; the gap is SD minus SI.
launch/personalization_gap.sh runs every K for both and writes the figure and the table.

  python -m papt_jax.main --config=configs/personalization_gap.py --workdir=runs/gap/si_250 \
      --config.data.corpus_dir=/data/MSP-Podcast-1.6 \
      --config.model.init=converted:ckpt/hubert_large \
      --config.finetune.train_speakers=250 --config.finetune.speaker_dependent=False

The paper's K for MSP-Podcast: 50, 100, 250, 500, 987 (`PAPER_K`); the embedded corpus's
40 training speakers use `DEMO_K` (each above test-a's 20 speakers, which an SD model swaps
in).
"""

from papt_jax.experiment.config_defaults import apply_embedded_corpus, base_config

PAPER_K = (50, 100, 250, 500, 987)
DEMO_K = (25, 30, 40)
SMOKE_K = (6, 10)


def get_config(variant: str = ""):
    config = base_config()
    config.name = "Personalization gap"
    config.stages = "corpus,prepare,bootstrap,finetune,evaluate,report"
    config.finetune.init = "model"
    config.finetune.train_speakers = PAPER_K[-1]
    config.evaluate.splits = "test_b"
    if variant:
        apply_embedded_corpus(config, variant)
        config.finetune.train_speakers = (SMOKE_K if variant == "smoke" else DEMO_K)[-1]
    return config
