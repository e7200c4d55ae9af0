"""Every check of an experiment config, before any work starts.

`validate(config)` checks every field's type, range and choices, and the cross-field
facts that are known up front (paths exist, batch sizes divide over the devices, encoder
specs are readable), and raises one `ConfigError` listing every problem in the user's
terms: the `--config.` key and its value. `validate_against_data` adds the checks that
need the built dataset (PLDC `k` against the number of training speakers).

The table `FIELDS` names every key a config may hold; a key it does not know (a typo in a
config file) is itself a problem, so the table and `configs/common.py` cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import ml_collections

from papt_jax.data.msp_podcast import DIMENSIONS
from papt_jax.data.msp_podcast import SPLIT_NAMES as DATASET_SPLITS
from papt_jax.data.synthetic.presets import CORPUS_PRESETS
from papt_jax.errors import UserError

STAGES = (
    "corpus",  # generate the synthetic corpus (embedded-corpus runs only)
    "prepare",  # build the TFDS array_record dataset from the corpus
    "bootstrap",  # embedded corpus: pre-train a small HuBERT from scratch on MFCC labels
    "pseudo_labels",  # k-means labels for the adaptation corpus
    "pretrain",  # PAPT / TAPT continued pre-training
    "speaker_weights",  # B2 only: loss weights of the training speakers
    "finetune",  # arousal and valence regressors
    "evaluate",  # test-b (seen) and test-c (unseen speakers), with PLDC
    "report",  # results.md and plots
)
# models.config.MODEL_PRESETS' names (kept here so validating needs no JAX import; a test
# checks that the two agree).
MODEL_PRESET_NAMES = (
    "base",
    "large",
    "small",
    "tiny",
    "hubert-base",
    "hubert-large",
    "wav2vec2-base",
    "wav2vec2-large",
    "wav2vec2-large-lv60",
    "wavlm-base",
    "wavlm-base-plus",
    "wavlm-large",
    "data2vec-audio-base",
    "data2vec-audio-large",
    "wav2vec2-small",
    "wav2vec2-tiny",
    "wavlm-small",
    "wavlm-tiny",
    "data2vec-audio-small",
    "data2vec-audio-tiny",
)
# models.config.REMAT_POLICIES (kept here so validating needs no JAX import; a test checks
# that the two agree).
REMAT_POLICY_NAMES = (
    "none",
    "full",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "nothing_saveable",
    "everything_saveable",
    "checkpoint_dots",
    "checkpoint_dots_with_no_batch_dims",
)
PARAM_SHARDINGS = ("replicated", "fsdp")
# Stage outputs that can stand in for an encoder spec.
WORKDIR_ENCODERS = ("bootstrap", "pretrain")


class ConfigError(UserError):
    """The configuration cannot run; the message lists every problem."""


def csv(value: Any) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c')."""
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder comes from.

    Attributes:
      kind: 'converted' (a folder from `python -m papt_jax.convert`), 'pytorch' (a Hugging
        Face folder or fairseq `.pt`), 'preset' (random init of a named architecture) or
        'workdir' (this run's 'bootstrap' or 'pretrain' output).
      value: the path, preset name or stage name.
    """

    kind: str
    value: str


def parse_encoder_spec(spec: str) -> EncoderSpec:
    """The one parser of `model.init` / `pseudo_labels.teacher` strings.

    Raises:
      ValueError: the spec has no known form (the message says which forms exist).
    """
    if spec in WORKDIR_ENCODERS:
        return EncoderSpec("workdir", spec)
    kind, sep, value = spec.partition(":")
    if sep and kind in ("converted", "pytorch", "preset") and value:
        return EncoderSpec(kind, value)
    raise ValueError(
        f"cannot read {spec!r}: use converted:DIR (from `python -m papt_jax.convert`), "
        "pytorch:PATH (Hugging Face folder or fairseq .pt), preset:NAME (random init), "
        "or 'bootstrap' (embedded corpus)"
    )


# --- field rules -----------------------------------------------------------------------
# A rule takes a value and returns a problem ('must be ...') or None.
Rule = Callable[[Any], str | None]


def _typed(types: tuple[type, ...], what: str, check: Callable[[Any], bool] = lambda v: True):
    def rule(value: Any) -> str | None:
        if isinstance(value, bool) and bool not in types:
            return f"must be {what}"
        if not isinstance(value, types) or not check(value):
            return f"must be {what}"
        return None

    return rule


def integer(minimum: int, maximum: int | None = None) -> Rule:
    what = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    return _typed((int,), what, lambda v: v >= minimum and (maximum is None or v <= maximum))


def number(low: float, high: float = math.inf, *, low_open=False, high_open=False) -> Rule:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    what = f"a finite number in {lo}{low:g}, {high:g}{hi}"

    def inside(v: float) -> bool:
        if not math.isfinite(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    return _typed((int, float), what, inside)


def positive(value: Any) -> str | None:
    return number(0.0, low_open=True)(value)


def choice(*options: str) -> Rule:
    return _typed((str,), f"one of {', '.join(repr(o) for o in options)}", lambda v: v in options)


def csv_of(*options: str, allow_empty: bool = False) -> Rule:
    def rule(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a comma-separated string"
        items = csv(value)
        if not items and not allow_empty:
            return f"must name at least one of {', '.join(options)}"
        unknown = [i for i in items if i not in options]
        if unknown:
            return f"has unknown {', '.join(unknown)}; choose from {', '.join(options)}"
        return None

    return rule


def nonempty_csv(value: Any) -> str | None:
    if not isinstance(value, str) or not csv(value):
        return "must be a non-empty comma-separated list"
    return None


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def existing_path_or_empty(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a path string"
    if value and not os.path.exists(value):
        return "does not exist"
    return None


def existing_dir_or_empty(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a path string"
    if value and not os.path.isdir(value):
        return "is not a folder"
    return None


def remat(value: Any) -> str | None:
    if isinstance(value, bool):  # configs written before remat policies: True/False
        return None
    return choice(*REMAT_POLICY_NAMES)(value)


def encoder_spec(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return None  # whether it is needed depends on the stages (see `_required`)
    try:
        spec = parse_encoder_spec(value)
    except ValueError as e:
        return str(e)
    if spec.kind in ("converted", "pytorch") and not os.path.exists(spec.value):
        return f"{spec.value!r} does not exist"
    if spec.kind == "preset" and spec.value not in MODEL_PRESET_NAMES:
        return f"has no preset {spec.value!r}; choose from {', '.join(MODEL_PRESET_NAMES)}"
    return None


def quantizer_dropout(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == -1:
        return None  # the checkpoint's own
    problem = number(0.0, 1.0, high_open=True)(value)
    return None if problem is None else f"{problem}, or -1 (the checkpoint's own)"


FIELDS: dict[str, Rule] = {
    "name": _typed((str,), "a non-empty string", bool),
    "seed": integer(0),
    "stages": csv_of(*STAGES),
    "num_devices": integer(0),
    "log_every": integer(1),
    # data
    "data.corpus_dir": existing_dir_or_empty,
    "data.synthetic_preset": choice("", *CORPUS_PRESETS),
    "data.labels_file": string,
    "data.new_labels_file": string,
    "data.new_corpus_dir": existing_dir_or_empty,
    "data.train_splits": nonempty_csv,
    "data.validation_splits": nonempty_csv,
    "data.test_splits": nonempty_csv,
    "data.new_test_splits": nonempty_csv,
    "data.test_a_seconds": positive,
    "data.on_bad_rows": choice("error", "skip"),
    "data.on_bad_audio": choice("skip", "error"),
    "data.resample": boolean,
    "data.data_dir": string,
    "data.verify_audio": choice("stat", "content"),
    "data.max_seconds": number(1.0),
    "data.num_buckets": integer(1, 8),
    "data.batch_seconds": number(0.0),
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1),
    "data.worker_count": integer(0),
    # model
    "model.init": encoder_spec,
    "model.dtype": choice("float32", "bfloat16"),
    "model.remat": remat,
    "model.scan_layers": boolean,
    # training at scale
    "train.accumulate_steps": integer(1),
    "train.param_sharding": choice(*PARAM_SHARDINGS),
    "model.allow_unsafe_pickle": boolean,
    # bootstrap
    "bootstrap.preset": choice(*MODEL_PRESET_NAMES),
    "bootstrap.num_clusters": integer(2),
    "bootstrap.train_splits": csv_of(*DATASET_SPLITS),
    "bootstrap.eval_split": choice(*DATASET_SPLITS),
    "bootstrap.epochs": integer(1),
    "bootstrap.peak_lr": positive,
    "bootstrap.mask_prob": number(0.0, 1.0, low_open=True),
    "bootstrap.features_pen_weight": number(0.0),
    # pseudo-labels
    "pseudo_labels.source": choice("teacher", "mfcc"),
    "pseudo_labels.teacher": encoder_spec,
    "pseudo_labels.layer": integer(1),
    "pseudo_labels.num_clusters": integer(2),
    "pseudo_labels.fit_fraction": number(0.0, 1.0, low_open=True),
    "pseudo_labels.kmeans_batch_size": integer(1),
    "pseudo_labels.kmeans_max_iter": integer(1),
    "pseudo_labels.kmeans_n_init": integer(1),
    "pseudo_labels.centroids": existing_path_or_empty,
    # continued pre-training
    "pretrain.speaker_fusion": choice("last", "first", "prefix", "none"),
    "pretrain.train_splits": csv_of(*DATASET_SPLITS),
    "pretrain.eval_split": choice(*DATASET_SPLITS),
    "pretrain.epochs": integer(1),
    "pretrain.peak_lr": positive,
    "pretrain.warmup_fraction": number(0.0, 1.0, high_open=True),
    "pretrain.adam_b1": number(0.0, 1.0, high_open=True),
    "pretrain.adam_b2": number(0.0, 1.0, high_open=True),
    "pretrain.adam_eps": positive,
    "pretrain.weight_decay": number(0.0),
    "pretrain.clip_norm": positive,
    "pretrain.hidden_dropout": number(0.0, 1.0, high_open=True),
    "pretrain.attention_dropout": number(0.0, 1.0, high_open=True),
    "pretrain.activation_dropout": number(0.0, 1.0, high_open=True),
    "pretrain.feat_proj_dropout": number(0.0, 1.0, high_open=True),
    "pretrain.mask_prob": number(0.0, 1.0, low_open=True),
    "pretrain.mask_length": integer(1),
    "pretrain.features_pen_weight": number(0.0),
    "pretrain.crop_to_shortest": boolean,
    "pretrain.final_dim": integer(1),
    "pretrain.stop_after_steps": integer(0),
    "pretrain.objective": choice("auto", "masked_prediction", "contrastive"),
    "pretrain.utterance_mixing": choice("auto", "on", "off"),
    "pretrain.mixing_prob": number(0.0, 1.0),
    "pretrain.noise_dir": existing_dir_or_empty,
    "pretrain.noise_prob": number(0.0, 1.0),
    "pretrain.num_negatives": integer(1),
    "pretrain.diversity_weight": number(0.0),
    "pretrain.gumbel_temp_max": positive,
    "pretrain.gumbel_temp_min": positive,
    "pretrain.gumbel_temp_decay": number(0.0, 1.0, low_open=True),
    "pretrain.gumbel_step_offset": integer(0),
    "pretrain.num_codevector_groups": integer(1),
    "pretrain.num_codevectors_per_group": integer(2),
    "pretrain.codevector_dim": integer(1),
    "pretrain.quantizer_dropout": quantizer_dropout,
    # every training stage
    "train.checkpoint_every_minutes": number(0.0),
    # fine-tuning
    "finetune.dimensions": csv_of(*DIMENSIONS),
    "finetune.init": choice("pretrain", "model"),
    "finetune.epochs": integer(1),
    "finetune.peak_lr": positive,
    "finetune.schedule": choice("constant", "linear"),
    "finetune.warmup_fraction": number(0.0, 1.0, high_open=True),
    "finetune.clip_norm": positive,
    "finetune.patience": integer(1),
    "finetune.freeze_feature_extractor": boolean,
    "finetune.label_scaling": choice("none", "unit"),
    "finetune.head_dropout": number(0.0, 1.0, high_open=True),
    "finetune.stop_after_steps": integer(0),
    "finetune.speaker_weighting": choice("none", "b2"),
    "finetune.train_speakers": integer(0),
    "finetune.speaker_dependent": boolean,
    # B2
    "b2.test_split": choice("test_a", "test_b"),
    "b2.pca_components": integer(1),
    "b2.gmm_components": integer(1),
    "b2.neighbours": integer(1),
    "b2.weight": number(1.0),
    # evaluation
    "evaluate.splits": csv_of(*(s for s in DATASET_SPLITS if s != "train")),
    "evaluate.pldc_k": integer(1),
}


def flatten(config: Mapping[str, Any] | ml_collections.ConfigDict, prefix: str = "") -> dict:
    """{'data.batch_size': 8, ...} for every leaf of a (nested) config."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _needs(stages: Iterable[str], *which: str) -> bool:
    return bool(set(stages) & set(which))


def _required(values: Mapping[str, Any], stages: tuple[str, ...]) -> list[str]:
    """Problems of the 'this must be set for these stages' kind."""
    problems = []
    embedded = bool(values["data.synthetic_preset"])
    if not embedded and not values["data.corpus_dir"]:
        problems.append(
            "--config.data.corpus_dir is not set: give the MSP-Podcast folder (with Audios/ and "
            "Labels/), or use an embedded-corpus variant such as configs/papt.py:demo"
        )
    needs_model = _needs(stages, "pretrain", "evaluate") or (
        _needs(stages, "finetune") and values["finetune.init"] == "model"
    )
    if needs_model and not values["model.init"]:
        problems.append(
            "--config.model.init is not set: converted:DIR (from `python -m papt_jax.convert`), "
            "pytorch:PATH (Hugging Face folder or fairseq .pt) or preset:NAME (random init)"
        )
    from papt_jax.experiment import objectives  # it reads parse_encoder_spec from here

    teacher_needed = (
        _needs(stages, "pseudo_labels")
        and values["pseudo_labels.source"] == "teacher"
        and objectives.labels_needed(values)
    )
    if teacher_needed and not values["pseudo_labels.teacher"]:
        problems.append(
            "--config.pseudo_labels.teacher is not set: the encoder whose layer is clustered "
            "(HuBERT-base iteration 2 for the paper), as converted:DIR or pytorch:PATH"
        )
    for key in ("model.init", "pseudo_labels.teacher"):
        if values[key] == "pretrain":
            problems.append(
                f"--config.{key}='pretrain' is this run's own output; it cannot be its input"
            )
    if embedded and values["data.new_corpus_dir"]:
        problems.append("--config.data.new_corpus_dir is for MSP-Podcast, not the embedded corpus")
    return problems


def _batch_divisibility(values: Mapping[str, Any]) -> list[str]:
    """Batch sizes must split over the devices, training batches over devices x micro-batches."""
    problems = []
    devices = values["num_devices"]
    accumulate = values["train.accumulate_steps"]
    if isinstance(devices, int) and devices > 0:
        import jax

        available = jax.device_count()
        if devices > available:
            problems.append(
                f"--config.num_devices={devices} but only {available} device(s) are visible"
            )
    elif accumulate > 1:
        import jax

        devices = jax.device_count()  # num_devices=0: all of them
    else:
        return problems
    named = f"--config.num_devices={devices}" if values["num_devices"] else f"the {devices} devices"
    size = values["data.eval_batch_size"]
    if size % devices:
        problems.append(f"--config.data.eval_batch_size={size} is not a multiple of {named}")
    size = values["data.batch_size"]
    if values["data.batch_seconds"]:
        return problems  # rows per batch are then rounded to a multiple of devices x steps
    if accumulate > 1 and size % (devices * accumulate):
        problems.append(
            f"--config.data.batch_size={size} does not split into --config.train."
            f"accumulate_steps={accumulate} micro-batches over {devices} device(s): it must "
            f"be a multiple of {devices * accumulate}"
        )
    elif size % devices:
        problems.append(f"--config.data.batch_size={size} is not a multiple of {named}")
    return problems


def _cross_field(values: Mapping[str, Any]) -> list[str]:
    problems = _batch_divisibility(values)
    if values["finetune.speaker_dependent"] and not values["finetune.train_speakers"]:
        problems.append(
            "--config.finetune.speaker_dependent=True needs --config.finetune.train_speakers "
            "(the number of speakers the model trains on)"
        )
    if values["pretrain.gumbel_temp_min"] > values["pretrain.gumbel_temp_max"]:
        problems.append(
            f"--config.pretrain.gumbel_temp_min={values['pretrain.gumbel_temp_min']} is above "
            f"--config.pretrain.gumbel_temp_max={values['pretrain.gumbel_temp_max']}"
        )
    if values["pretrain.codevector_dim"] % values["pretrain.num_codevector_groups"]:
        problems.append(
            f"--config.pretrain.codevector_dim={values['pretrain.codevector_dim']} is not a "
            "multiple of --config.pretrain.num_codevector_groups="
            f"{values['pretrain.num_codevector_groups']}"
        )
    for stage in ("pretrain", "bootstrap"):
        if values[f"{stage}.eval_split"] in csv(values[f"{stage}.train_splits"]):
            problems.append(
                f"--config.{stage}.eval_split={values[f'{stage}.eval_split']!r} is also in "
                f"--config.{stage}.train_splits: its validation loss would be on training audio"
            )
    return problems


def _noise_dir(values: Mapping[str, Any], stages: tuple[str, ...]) -> list[str]:
    """The noise folder of WavLM's mixing holds audio files whose headers can be used
    (read before any work; the samples are read when a training stage starts)."""
    folder = values["pretrain.noise_dir"]
    if not folder or not _needs(stages, "bootstrap", "pretrain"):
        return []
    from papt_jax.data.noise_bank import NoiseDirError, check_noise_dir

    try:
        check_noise_dir(folder, bool(values["data.resample"]))
    except NoiseDirError as err:
        return [f"--config.pretrain.noise_dir={folder!r}: {err.message} ({err.hint})"]
    return []


SHOW_CONFIG_HINT = "every setting with its value and meaning: add --show_config to the command"


def _refuse(problems: Sequence[str]) -> NoReturn:
    raise ConfigError(
        "cannot run this configuration:\n  - " + "\n  - ".join(problems), hint=SHOW_CONFIG_HINT
    )


def validate(config: ml_collections.ConfigDict, problems: Sequence[str] = ()) -> tuple[str, ...]:
    """Checks the whole config; returns the stages it asks for.

    Args:
      config: the experiment config.
      problems: problems found before, listed with the config's own: the command line's
        overrides that could not be applied (`cli.override_problems`).

    Raises:
      ConfigError: listing every problem found, each with its `--config.` key.
    """
    values = flatten(config)
    problems = list(problems)
    found = []
    for key in sorted(set(values) - set(FIELDS)):
        found.append(f"--config.{key} is not a known setting")
    for key, rule in FIELDS.items():
        if key not in values:
            found.append(f"--config.{key} is missing from the config file")
            continue
        problem = rule(values[key])
        if problem:
            found.append(f"--config.{key}={values[key]!r} {problem}")
    if found:  # later checks read the values, which must have the right types first
        _refuse(problems + found)
    stages = csv(values["stages"])
    problems += _required(values, stages) + _cross_field(values) + _noise_dir(values, stages)
    if problems:
        _refuse(problems)
    return stages


def validate_against_data(config: ml_collections.ConfigDict, train_speakers: int) -> None:
    """Checks that need the built dataset.

    Args:
      config: the run's config.
      train_speakers: number of speakers in the built `train` split.

    Raises:
      ConfigError: PLDC would retrieve more training speakers than exist (it would no
        longer be personalised: every test speaker would get the same neighbours).
    """
    k = int(config.evaluate.pldc_k)
    if k >= train_speakers:
        raise ConfigError(
            f"--config.evaluate.pldc_k={k} but the training set has {train_speakers} speakers: "
            "PLDC needs k below that to retrieve a personal neighbourhood",
            hint=f"use --config.evaluate.pldc_k={max(1, train_speakers // 10)} or another value "
            f"below {train_speakers}",
        )
