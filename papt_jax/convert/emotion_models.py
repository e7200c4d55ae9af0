"""Published dimensional emotion models: their head layouts, head tables and facts.

* audEERING `w2v2-L-robust-12` (`audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim`):
  a HF folder whose `config.json` is a `Wav2Vec2Config` (12 layers, stable layer norm,
  `id2label` arousal/dominance/valence, `final_dropout`) and whose weights are the
  encoder under `wav2vec2.` plus `classifier.dense` and `classifier.out_proj`. Its
  model card's `EmotionModel` mean-pools the last hidden state over time, then
  dropout -> dense -> tanh -> dropout -> out_proj; its processor normalises each
  waveform to zero mean and unit variance. Outputs are roughly in 0..1.
* the MSP-Podcast challenge 2024 WavLM multi-attribute baseline, in the two layouts it
  ships in: the GitHub release folder (github.com/msplabresearch/MSP-Podcast_Challenge:
  `final_ssl.pt` a `WavLMModel` state dict of microsoft/wavlm-large, `final_pool.pt`
  an `AttentiveStatisticsPooling` (net/pooling.py: `sap_linear`, `attention` (D, 1)),
  `final_ser.pt` an `EmotionRegression` (net/ser.py: `fc.{i}.0` Linear, `fc.{i}.1`
  LayerNorm, ReLU, Dropout; `out.0` Linear), `train_norm_stat.pkl` the pickled
  (wav_mean, wav_std) of the training audio) and the Hugging Face package
  `3loi/SER-Odyssey-Baseline-WavLM-Multi-Attributes` (custom code; `model.safetensors`
  keys `ssl_model.*`, `pool_model.*`, `ser_model.*`; `config.json` holds `mean`, `std`,
  `sampling_rate`, `ssl_type`, `classifier_dropout_prob`). The input is
  `(wav - mean) / (std + 1e-6)`; the outputs are arousal, dominance, valence as
  `(label - 1) / 6`, i.e. on 0..1.

`*_RULES` map each head's PyTorch names (the HF package's, for the challenge model: the
release folder's files are read under those prefixes) onto the Flax head's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax.convert.conversion_errors import CheckpointFormatError
from papt_jax.convert.mapping import IDENTITY_2D, Rule, dense, norm
from papt_jax.convert.safe_unpickle import load_plain_pickle

EMOTION_LABELS = ("arousal", "dominance", "valence")
# Both models predict each attribute rescaled from MSP-Podcast's 1..7 to 0..1.
LABEL_RANGE = (0.0, 1.0)

AUDEERING_KEYS = (
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
)
AUDEERING_RULES: tuple[Rule, ...] = (
    *dense("classifier.dense", "dense"),
    *dense("classifier.out_proj", "out_proj"),
)

MSP_ENCODER_PREFIX = "ssl_model."
MSP_HEAD_PREFIXES = ("pool_model.", "ser_model.")
MSP_RULES: tuple[Rule, ...] = (
    *dense("pool_model.sap_linear", "pool_model/sap_linear"),
    Rule("pool_model.attention", "pool_model/attention", IDENTITY_2D),
    *dense("ser_model.fc.{i}.0", "ser_model/fc_{i}/linear"),
    *norm("ser_model.fc.{i}.1", "ser_model/fc_{i}/layer_norm"),
    *dense("ser_model.out.0", "ser_model/out"),
)
# The GitHub release folder: file -> the HF package's prefix of its keys.
MSP_RELEASE_FILES = {
    "final_ssl.pt": MSP_ENCODER_PREFIX,
    "final_pool.pt": "pool_model.",
    "final_ser.pt": "ser_model.",
}
MSP_NORM_STAT_FILE = "train_norm_stat.pkl"
# The challenge's WavLM: `AutoModel.from_pretrained("microsoft/wavlm-large")`.
MSP_SSL_TYPE = "microsoft/wavlm-large"
# net/ser.py's default, and the value run_dim.sh trains with.
MSP_DROPOUT = 0.5
# utils/dataset/dataset.py: (wav - wav_mean) / (wav_std + 0.000001).
MSP_STD_EPS = 1e-6


def is_audeering(state_dict: Mapping[str, Any]) -> bool:
    """Whether HF-named weights carry audEERING's regression head."""
    return all(key in state_dict for key in AUDEERING_KEYS)


def is_msp_package(state_dict: Mapping[str, Any]) -> bool:
    """Whether weights are the challenge model's HF package (or its release files, read)."""
    return any(key.startswith(MSP_ENCODER_PREFIX) for key in state_dict) and (
        "pool_model.attention" in state_dict
    )


def _labels(hf: Mapping[str, Any], where: str) -> tuple[str, ...]:
    id2label = hf.get("id2label")
    if not isinstance(id2label, Mapping):
        raise CheckpointFormatError(f"{where}: the emotion model's config has no id2label")
    try:
        labels = tuple(str(id2label[key]).lower() for key in sorted(id2label, key=int))
    except ValueError as err:
        raise CheckpointFormatError(f"{where}: id2label keys are not indices: {err}") from err
    if sorted(labels) != sorted(EMOTION_LABELS):
        raise CheckpointFormatError(
            f"{where}: the emotion head predicts {list(labels)}; only the three "
            f"dimensions {list(EMOTION_LABELS)} (in any order) are supported"
        )
    return labels


def audeering_head(
    hf: Mapping[str, Any], head: Mapping[str, np.ndarray], where: str
) -> dict[str, Any]:
    """The audEERING head's config values, checked against its weights.

    Raises:
      CheckpointFormatError: labels other than the three dimensions, or weights whose
        shapes contradict the config.
    """
    labels = _labels(hf, where)
    rows, width = head["classifier.out_proj.weight"].shape
    hidden = hf.get("hidden_size")
    if rows != len(labels) or head["classifier.dense.weight"].shape != (hidden, hidden):
        raise CheckpointFormatError(
            f"{where}: classifier.dense {head['classifier.dense.weight'].shape} and "
            f"classifier.out_proj {(rows, width)} do not fit hidden_size {hidden} and "
            f"{len(labels)} labels"
        )
    dropout = hf.get("final_dropout", 0.1)
    return {
        "kind": "audeering",
        "labels": list(labels),
        "label_range": list(LABEL_RANGE),
        "pooling": "mean",
        "dropout": float(dropout),
    }


def read_norm_stat(path: Path) -> tuple[float, float]:
    """The release's `train_norm_stat.pkl`: pickled (wav_mean, wav_std) NumPy scalars.

    Raises:
      UnsafePickleError: the pickle names anything but numbers and NumPy scalars.
      CheckpointFormatError: not a pair of finite numbers with a positive std.
    """
    value = load_plain_pickle(path)
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise CheckpointFormatError(f"{path} holds {type(value).__name__}, not (mean, std)")
    mean, std = value
    if not all(isinstance(v, int | float) and np.isfinite(v) for v in (mean, std)) or std <= 0:
        raise CheckpointFormatError(f"{path}: (mean, std) = ({mean!r}, {std!r}) is not usable")
    return float(mean), float(std)


def msp_head(
    head: Mapping[str, np.ndarray],
    mean: float,
    std: float,
    dropout: float,
    labels: tuple[str, ...],
    where: str,
) -> dict[str, Any]:
    """The challenge model's head config values, read off its weights.

    Raises:
      CheckpointFormatError: a pooling or regression head whose shapes do not fit
        together (pooling output 2 x D into the first Linear, D from the attention).
    """
    layers = sorted({int(key.split(".")[2]) for key in head if key.startswith("ser_model.fc.")})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointFormatError(f"{where}: ser_model.fc layers {layers} are not 0..n-1")
    width = head["pool_model.attention"].shape[0]
    first = head["ser_model.fc.0.0.weight"].shape
    outputs = head["ser_model.out.0.weight"].shape[0]
    if first[1] != 2 * width or outputs != len(labels):
        raise CheckpointFormatError(
            f"{where}: ser_model.fc.0.0 {first} does not take the pooled 2 x {width} "
            f"features, or ser_model.out.0 has {outputs} outputs for {len(labels)} labels"
        )
    return {
        "kind": "msp_challenge",
        "labels": list(labels),
        "label_range": list(LABEL_RANGE),
        "pooling": "attentive_statistics",
        "hidden_dim": int(first[0]),
        "num_layers": len(layers),
        "dropout": float(dropout),
        "input_mean": mean,
        "input_std": std,
        "input_std_eps": MSP_STD_EPS,
    }


def msp_package_facts(
    hf: Mapping[str, Any], where: str
) -> tuple[float, float, float, tuple[str, ...], list[str]]:
    """(mean, std, dropout, labels, notes) from the HF package's `config.json`.

    Labels come from `id2label` when it names the three dimensions; transformers'
    placeholder names (`LABEL_0`...) or no `id2label` mean the challenge's own order
    (utils/data/podcast.py: EmoAct, EmoDom, EmoVal), and a note says so.

    Raises:
      CheckpointFormatError: another backbone than microsoft/wavlm-large, another
        sampling rate than 16 kHz, or no usable mean/std.
    """
    ssl_type = hf.get("ssl_type", MSP_SSL_TYPE)
    if ssl_type != MSP_SSL_TYPE:
        raise CheckpointFormatError(
            f"{where}: ssl_type={ssl_type!r}: only the challenge's {MSP_SSL_TYPE} backbone "
            "is supported (its architecture is not in the file)"
        )
    if hf.get("sampling_rate", 16000) != 16000:
        raise CheckpointFormatError(f"{where}: sampling_rate={hf['sampling_rate']!r}, not 16000")
    mean, std = hf.get("mean"), hf.get("std")
    if not all(isinstance(v, int | float) and np.isfinite(v) for v in (mean, std)) or std <= 0:
        raise CheckpointFormatError(f"{where}: mean={mean!r}, std={std!r} are not usable")
    names = [str(v) for v in (hf.get("id2label") or {}).values()]
    notes = []
    if names and not all(name.startswith("LABEL_") for name in names):
        labels = _labels(hf, where)
    else:
        labels = EMOTION_LABELS
        notes.append(
            "the config does not name its outputs: read as arousal, dominance, valence, the "
            "challenge code's order"
        )
    dropout = float(hf.get("classifier_dropout_prob", MSP_DROPOUT))
    return float(mean), float(std), dropout, labels, notes
