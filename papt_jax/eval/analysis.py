"""The report's analyses of one result: PLDC oracle, retrieval diagnostic and speaker shift.

All three use the test labels, so none of them is a method; they explain the numbers.

* **PLDC oracle** (`pldc.pldc_oracle`): each test speaker's predictions calibrated to its *own*
  label mean and std, per PLDC mode: how much calibration could gain at most.
* **Retrieval diagnostic** (`pldc.retrieved_label_stats`, `pldc.retrieval_diagnostic`): the
  label mean and std PLDC retrieved for each test speaker against the speaker's own, computed
  with the very vectors and k of the evaluation (fine-tuned pooled vectors for seen speakers,
  the original encoder's for the unseen split). Before reporting, the retrieved targets are
  checked to reproduce the evaluation's PLDC predictions exactly. Besides the training set's
  global mean and std (`retrieval_diagnostic`'s trivial guess), the targets are also compared
  with the average over *all* training speakers (PLDC with k = every speaker): a per-speaker
  std is smaller than the pooled one, so only this second guess tells whether retrieving
  *similar* speakers helps.
* **Speaker shift** (`shift_analysis.speaker_shift`, paper §3): per test speaker, KL of its
  feature and label distributions from the training set's. Features are the evaluated
  (fine-tuned) model's mean-pooled vectors in every split, because the shift that can explain
  a speaker's error is the shift of what the regression head receives; for the unseen split
  that includes the proxy speaker's embedding. One feature space for all splits also keeps
  their KLs comparable. (The original encoder's vectors serve retrieval, which the retrieval
  diagnostic covers.) The per-speaker CCC is that of the uncalibrated predictions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from papt_jax import pldc, shift_analysis
from papt_jax.errors import UserError
from papt_jax.eval.results import EvalResult, ReportError, variant_metrics

# The split evaluated as unseen speakers (`evaluate.evaluate_dimension` treats 'test_c' so):
# PLDC retrieved its speakers with the original encoder's vectors.
UNSEEN_SPLIT = "test-c"

ORIGINAL_ENCODER_FILE = "original_encoder.npz"

# Calibrated predictions recomputed from the saved passes must match the evaluation's to this
# (labels are on a 1..7 scale; float32 round-off is ~1e-6).
_REPRODUCE_ATOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Reference:
    """What one result is compared with: the training set and the test utterances' vectors.

    Attributes:
      k: PLDC neighbours the evaluation used.
      train_labels: (M,) training labels of the result's dimension.
      train_speaker: (M,) training speaker of each training utterance (any sortable ids).
      retrieval_train: (M, D) vectors PLDC retrieved training speakers with.
      retrieval_test: (N, D) the same encoder's vectors of the test utterances, in the
        result's key order.
      feature_train: (M, F) the evaluated model's mean-pooled training vectors (shift).
      feature_test: (N, F) the same for the test utterances, in the result's key order.
      retrieval_source: Which encoder made the retrieval vectors, for the report.
    """

    k: int
    train_labels: np.ndarray
    train_speaker: np.ndarray
    retrieval_train: np.ndarray
    retrieval_test: np.ndarray
    feature_train: np.ndarray
    feature_test: np.ndarray
    retrieval_source: str


@dataclasses.dataclass(frozen=True)
class Retrieval:
    """PLDC's retrieved targets per test speaker and how well they match the speakers' own.

    Attributes:
      speakers: (St,) test speaker ids (`np.unique` order).
      mu_bar, sigma_bar: (St,) retrieved label mean and std.
      diagnostic: `pldc.retrieval_diagnostic` of the retrieved targets.
      all_speakers: the same for the average over every training speaker.
      all_mean, all_std: that average (the same for every test speaker).
      global_mean, global_std: the training set's label mean and std (trivial guess).
    """

    speakers: np.ndarray
    mu_bar: np.ndarray
    sigma_bar: np.ndarray
    diagnostic: dict
    all_speakers: dict
    all_mean: float
    all_std: float
    global_mean: float
    global_std: float


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Every analysis of one result; `retrieval` and `shift` need a `Reference`.

    Attributes:
      oracle: {mode: (N,)} oracle-calibrated predictions.
      retrieval: a `Retrieval`, or None without a reference.
      shift: a `shift_analysis.SpeakerShift`, or None.
      missing: why `retrieval` / `shift` are absent ({'retrieval' | 'shift': reason}).
      k, retrieval_source: as in the `Reference` (None without one).
    """

    oracle: dict[str, np.ndarray]
    retrieval: Retrieval | None
    shift: shift_analysis.SpeakerShift | None
    missing: dict[str, str]
    k: int | None = None
    retrieval_source: str | None = None


def _dense(ids) -> tuple[np.ndarray, np.ndarray]:
    """(unique ids, int32 position of each entry): the dense indices PLDC works on."""
    unique, inverse = np.unique(np.asarray(ids), return_inverse=True)
    return unique, inverse.astype(np.int32)


def oracle_predictions(result: EvalResult) -> dict[str, np.ndarray]:
    """{mode: (N,)} predictions calibrated to each speaker's own labels (uses test labels)."""
    _, test_dense = _dense(result.speakers)
    out = pldc.pldc_oracle(result.predictions, test_dense, result.labels)
    return {mode: np.asarray(v, np.float64) for mode, v in out.items()}


def retrieval(result: EvalResult, ref: Reference) -> Retrieval:
    """PLDC's retrieved targets for `result`, checked against its calibrated predictions.

    Raises:
      ReportError: the targets do not reproduce the evaluation's PLDC output (the saved
        passes belong to another evaluation).
    """
    test_ids, test_dense = _dense(result.speakers)
    _, train_dense = _dense(ref.train_speaker)
    num_train = int(train_dense.max()) + 1
    args = (ref.retrieval_test, test_dense, ref.retrieval_train, ref.train_labels, train_dense)
    mu_bar, sigma_bar, neighbours = pldc.retrieved_label_stats(*args, ref.k)
    _check_reproduces(result, test_dense, neighbours, ref.train_labels, train_dense, num_train)
    mu_all, sigma_all, _ = pldc.retrieved_label_stats(*args, num_train)
    diag = pldc.retrieval_diagnostic(result.labels, test_dense, mu_bar, sigma_bar, ref.train_labels)
    every = pldc.retrieval_diagnostic(
        result.labels, test_dense, mu_all, sigma_all, ref.train_labels
    )
    labels = np.asarray(ref.train_labels, np.float64)
    return Retrieval(
        speakers=test_ids,
        mu_bar=mu_bar,
        sigma_bar=sigma_bar,
        diagnostic=diag,
        all_speakers=every,
        all_mean=float(mu_all[0]),
        all_std=float(sigma_all[0]),
        global_mean=float(labels.mean()),
        global_std=float(labels.std()),
    )


def _check_reproduces(result, test_dense, neighbours, train_labels, train_dense, num_train):
    mean, std = pldc.label_stats(np.asarray(train_labels, np.float64), train_dense, num_train)
    for mode, stored in result.calibrated.items():
        again = np.asarray(
            pldc.calibrate(result.predictions, test_dense, neighbours, mean, std, mode)
        )
        gap = float(np.max(np.abs(again - stored)))
        if not gap <= _REPRODUCE_ATOL:
            raise ReportError(
                f"{result.stem}: the saved evaluation passes do not reproduce the evaluation's "
                f"PLDC '{mode}' predictions (largest difference {gap:.3g})",
                hint="the passes and results come from different evaluations; rerun the "
                "evaluate stage (--redo=evaluate)",
            )


def shift(result: EvalResult, ref: Reference) -> shift_analysis.SpeakerShift:
    """`shift_analysis.speaker_shift` of the result's speakers against the training set."""
    rows, dim = np.shape(ref.feature_train)
    components = min(shift_analysis.DEFAULT_COMPONENTS, rows - 1, dim)
    return shift_analysis.speaker_shift(
        ref.feature_train,
        ref.train_labels,
        ref.feature_test,
        result.labels,
        result.predictions,
        result.speakers,
        n_components=components,
    )


def analyse(result: EvalResult, ref: Reference | None) -> Analysis:
    """Every analysis of one result; without a reference only the oracle.

    A shift analysis the data cannot support (e.g. features spanning too few dimensions)
    is recorded in `missing` with its reason rather than failing the whole report.
    """
    oracle = oracle_predictions(result)
    if ref is None:
        reason = "no evaluation passes given (evaluate/passes/*.npz)"
        return Analysis(oracle, None, None, {"retrieval": reason, "shift": reason})
    missing = {}
    found_shift = None
    try:
        found_shift = shift(result, ref)
    except UserError as e:
        missing["shift"] = str(e)
    return Analysis(
        oracle, retrieval(result, ref), found_shift, missing, ref.k, ref.retrieval_source
    )


# --- summary entries (JSON) --------------------------------------------------------------------


def _json(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


# What the retrieval summary calls each label statistic (`pldc.retrieval_diagnostic`'s prefix).
RETRIEVED_STATISTICS = {"label_mean": "mean", "label_std": "std"}


def _retrieval_summary(r: Retrieval) -> dict:
    """{"n_speakers", "label_mean": {...}, "label_std": {...}}: for each statistic, the
    Pearson r between the retrieved and the speaker's own value, and the mean absolute
    error of the retrieved value, of the all-speaker average and of the training set's."""
    d, every = r.diagnostic, r.all_speakers
    out = {"n_speakers": d["n"]}
    for name, prefix in RETRIEVED_STATISTICS.items():
        out[name] = {
            "pearson_r_retrieved_vs_own": _json(d[f"{prefix}_r"]),
            "mae_retrieved": _json(d[f"{prefix}_mae"]),
            "mae_all_speakers": _json(every[f"{prefix}_mae"]),
            "mae_training_set": _json(d[f"{prefix}_mae_global"]),
        }
    return out


def _shift_summary(s: shift_analysis.SpeakerShift) -> dict:
    return {
        "n_speakers": int(s.speakers.size),
        "n_speakers_used": int(s.used.sum()),
        "correlations": {
            name: {"r": _json(c["r"]), "p": _json(c["p"]), "n": int(c["n"])}
            for name, c in s.correlations.items()
        },
        "feature_kl_median": _json(np.nanmedian(s.feature_kl)) if s.used.any() else None,
        "label_kl_median": _json(np.nanmedian(s.label_kl)) if s.used.any() else None,
    }


def summary_entry(result: EvalResult, analysis: Analysis) -> dict:
    """The JSON-ready 'analysis' entry of one result in `summary.json`::

    {"oracle": {mode: variant metrics}, "pldc_k": k, "retrieval_vectors": str,
     "retrieval": {...} | None, "shift": {...} | None, "missing": {name: reason}}
    """
    return {
        "oracle": {
            mode: variant_metrics(preds, result.labels, result.speakers)
            for mode, preds in analysis.oracle.items()
        },
        "pldc_k": analysis.k,
        "retrieval_vectors": analysis.retrieval_source,
        "retrieval": None if analysis.retrieval is None else _retrieval_summary(analysis.retrieval),
        "shift": None if analysis.shift is None else _shift_summary(analysis.shift),
        "missing": dict(analysis.missing),
    }


# --- loading the evaluation's passes -----------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a readable evaluation pass file ({e})") from e


def _field(arrays: Mapping, path: Path, name: str) -> np.ndarray:
    if name not in arrays:
        raise ReportError(
            f"{path} has no array {name!r} (it has {sorted(arrays)[:8]}...)",
            hint="rerun the evaluate stage (--redo=evaluate) with this version",
        )
    return arrays[name]


def _rows_for(keys: np.ndarray, wanted: np.ndarray, where: str) -> np.ndarray:
    """Row of each `wanted` key in `keys`; every wanted key must be there exactly once."""
    keys = np.asarray(keys).astype(str)
    position = {k: i for i, k in enumerate(keys)}
    if len(position) != keys.size:
        raise ReportError(f"{where}: utterance keys repeat")
    lost = [k for k in wanted if k not in position]
    if lost or keys.size != wanted.size:
        raise ReportError(
            f"{where} holds other utterances than the evaluation result "
            f"({keys.size} vs {wanted.size}; e.g. missing {lost[:3]})",
            hint="rerun the evaluate stage (--redo=evaluate)",
        )
    return np.asarray([position[k] for k in wanted])


def reference_for(
    result: EvalResult, passes: Mapping, original: Mapping | None, k: int, where: Path
) -> Reference:
    """The `Reference` of one result from its dimension's pass file (and the original encoder's).

    Args:
      result: the evaluation result.
      passes: arrays of `evaluate/passes/<dimension>.npz` ('<pass>/<field>').
      original: arrays of `evaluate/passes/original_encoder.npz`, needed for the unseen split.
      k: PLDC neighbours of the evaluation.
      where: the passes folder, for messages.
    """
    path = where / f"{result.dimension}.npz"
    test = result.split.replace("-", "_")
    get = lambda name: _field(passes, path, name)  # noqa: E731
    rows = _rows_for(get(f"{test}/key"), result.keys, f"{path} pass {test!r}")
    labels = np.asarray(get(f"{test}/{result.dimension}"), np.float64)[rows]
    if not np.allclose(labels, result.labels, atol=1e-4):
        raise ReportError(f"{path} pass {test!r}: labels differ from the evaluation result's")
    train_keys = np.asarray(get("train/key")).astype(str)
    feature_train = np.asarray(get("train/pooled"), np.float64)
    feature_test = np.asarray(get(f"{test}/pooled"), np.float64)[rows]
    if result.split == UNSEEN_SPLIT:
        opath = where / ORIGINAL_ENCODER_FILE
        if original is None:
            raise ReportError(f"{opath} is missing: {result.split} retrieval cannot be checked")
        oget = lambda name: _field(original, opath, name)  # noqa: E731
        retrieval_train = np.asarray(oget("train/pooled"), np.float64)[
            _rows_for(oget("train/key"), train_keys, f"{opath} pass 'train'")
        ]
        retrieval_test = np.asarray(oget(f"{test}/pooled"), np.float64)[
            _rows_for(oget(f"{test}/key"), result.keys, f"{opath} pass {test!r}")
        ]
        source = "original encoder"
    else:
        retrieval_train, retrieval_test = feature_train, feature_test
        source = "fine-tuned model"
    return Reference(
        k=int(k),
        train_labels=np.asarray(get(f"train/{result.dimension}"), np.float64),
        train_speaker=np.asarray(get("train/speaker")),
        retrieval_train=retrieval_train,
        retrieval_test=retrieval_test,
        feature_train=feature_train,
        feature_test=feature_test,
        retrieval_source=source,
    )


def load_references(
    passes_dir: str | Path, results: Sequence[EvalResult], k: int | None
) -> dict[str, Reference]:
    """{result stem: Reference} for every result, from an evaluation's `passes/` folder.

    Raises:
      ReportError: the folder or a file is missing, unreadable or from another evaluation,
        or k is unknown.
    """
    where = Path(passes_dir)
    if k is None:
        raise ReportError(
            "the evaluation record has no PLDC k (facts.pldc_k)",
            hint="rerun the evaluate stage (--redo=evaluate)",
        )
    loaded: dict[str, dict] = {}

    def arrays(name: str) -> dict:
        if name not in loaded:
            path = where / name
            if not path.is_file():
                raise ReportError(
                    f"{path} is missing: the shift analysis and retrieval diagnostic need the "
                    "evaluation's passes",
                    hint="rerun the evaluate stage (--redo=evaluate)",
                )
            loaded[name] = _read_npz(path)
        return loaded[name]

    refs = {}
    for r in results:
        original = arrays(ORIGINAL_ENCODER_FILE) if r.split == UNSEEN_SPLIT else None
        refs[r.stem] = reference_for(r, arrays(f"{r.dimension}.npz"), original, k, where)
    return refs
