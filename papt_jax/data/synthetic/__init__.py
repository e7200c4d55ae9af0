"""Deterministic synthetic podcast-like corpus in the MSP-Podcast layout.

No one can ship MSP-Podcast, so the project generates a small stand-in corpus that the
very same reader, TFDS builder and pipeline consume. It is synthetic by construction and
exists to exercise the code and to show personalization effects that are known in
advance; it says nothing about real speech.

* `presets`: corpus sizes and the trait, label and cue models (`CORPUS_PRESETS`);
* `speakers`: voice traits, per-speaker label distributions and per-utterance labels;
* `voice`: source-filter synthesis of one utterance;
* `corpus`: `generate_corpus`, which writes the audio, both releases' labels and the truth;
* `__main__`: the command line, ``python -m papt_jax.data.synthetic --preset demo --out DIR``.
"""

from papt_jax.data.synthetic.presets import (
    CORPUS_PRESETS,
    CorpusPreset,
    CueModel,
    LabelModel,
    TraitRanges,
)

__all__ = [
    "CORPUS_PRESETS",
    "CorpusPreset",
    "CueModel",
    "LabelModel",
    "TraitRanges",
    "generate_corpus",
]


def __getattr__(name: str):
    # `generate_corpus` pulls in the synthesis (scipy.signal, about a second to import);
    # the config code imports this package for its presets only, so every
    # `python -m papt_jax.main` would pay for it. Load it on first use instead.
    if name == "generate_corpus":
        from papt_jax.data.synthetic.corpus import generate_corpus

        return generate_corpus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
