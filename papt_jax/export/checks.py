"""Every serialised predictor is run against JAX before its folder is complete.

`compare(graph, run_predict, run_head)` feeds padded batches of several lengths (the same
rows in different batches and shapes, and each row alone) through the serialised graphs and
through `PredictorGraph` under `jax.jit`, and returns the largest differences. An export whose
graphs differ from JAX by more than `TOLERANCE` is refused (`ExportCheckError`), so a file on
disk never predicts something else than the model it names.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from papt_jax.data.audio import RECEPTIVE_FIELD, SAMPLE_RATE
from papt_jax.export.graph import AUDIO, AUDIO_MASK, FRAMES, SPEAKER, PredictorGraph, pooled_name

TOLERANCE = 1e-4
# Row lengths of the check batches (samples): a second, a short clip, exactly one encoder
# frame; then 1.5 s and a length off the frame grid, padded to another shape.
CHECK_LENGTHS = ((SAMPLE_RATE, 8_800, RECEPTIVE_FIELD), (24_000, 5_123))

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class ExportCheckError(RuntimeError):
    """A serialised graph that does not reproduce the JAX model."""


def check_batch(graph: PredictorGraph, lengths: tuple[int, ...], seed: int) -> dict:
    """A padded batch of noise rows of `lengths` samples, with speaker rows when an input."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), np.float32)
    mask = np.zeros(audio.shape, bool)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.uniform(-0.3, 0.3, n).astype(np.float32)
        mask[i, :n] = True
    batch = {AUDIO: audio, AUDIO_MASK: mask}
    if graph.speaker_input:
        rows = [graph.average_row, 0, graph.average_row // 2]
        batch[SPEAKER] = np.asarray([rows[i % 3] for i in range(len(lengths))], np.int32)
    return batch


def _row(batch: dict[str, np.ndarray], i: int, length: int) -> dict[str, np.ndarray]:
    """Row `i` of `batch` alone, cut to its `length` real samples."""
    return {k: v[i : i + 1, :length] if v.ndim == 2 else v[i : i + 1] for k, v in batch.items()}


def _largest(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names) -> float:
    return max(float(np.max(np.abs(np.asarray(a[n]) - np.asarray(b[n])))) for n in names)


def compare(graph: PredictorGraph, run_predict: Run, run_head: Run, what: str) -> dict:
    """Runs the check batches through a serialised predictor and head and through JAX.

    Args:
      graph: the model the files were written from.
      run_predict: {input name: array} -> {output name: array} of the serialised predictor.
      run_head: {<dim>_pooled: (n, D)} -> {<dim>: (n,)} of the serialised head.
      what: names the files in an error.

    Returns:
      The check's record: row lengths, tolerance, and the largest absolute differences of
      the outputs from JAX's, of padded rows from the same rows alone, and of the head.

    Raises:
      ExportCheckError: a difference above `TOLERANCE`, or a frame count that differs.
    """
    # Weights as arguments: as constants, XLA would fold HuBERT-large's 300M parameters.
    predict = jax.jit(lambda weights, batch: graph.predict(weights, *batch.values()))
    head = jax.jit(graph.head)
    values = [n for n in graph.output_names if n != FRAMES]
    diff = {"vs_jax": 0.0, "padded_vs_alone": 0.0, "head_vs_jax": 0.0}

    def check() -> None:
        worst = max(diff, key=diff.get)
        if not all(np.isfinite(v) for v in diff.values()) or diff[worst] > TOLERANCE:
            raise ExportCheckError(
                f"{what}: {worst} differs by {diff[worst]:.3g} > {TOLERANCE} (checks: {diff}); "
                "the files were not written"
            )

    for seed, lengths in enumerate(CHECK_LENGTHS):
        batch = check_batch(graph, lengths, seed)
        got = run_predict(batch)
        want = jax.device_get(predict(graph.weights, batch))
        if not np.array_equal(got[FRAMES], want[FRAMES]):
            raise ExportCheckError(f"{what}: frame counts {got[FRAMES]} != JAX's {want[FRAMES]}")
        diff["vs_jax"] = max(diff["vs_jax"], _largest(got, want, values))
        check()  # before the slower per-row runs
        for i, n in enumerate(lengths):
            alone = run_predict(_row(batch, i, n))
            row = {k: np.asarray(got[k])[i : i + 1] for k in values}
            diff["padded_vs_alone"] = max(diff["padded_vs_alone"], _largest(alone, row, values))
        pooled = {pooled_name(d): np.asarray(got[pooled_name(d)]) for d in graph.dimensions}
        diff["head_vs_jax"] = max(
            diff["head_vs_jax"],
            _largest(
                run_head(pooled), jax.device_get(head(graph.weights, pooled)), graph.dimensions
            ),
        )
    check()
    return {
        "row_lengths": [list(lengths) for lengths in CHECK_LENGTHS],
        "tolerance": TOLERANCE,
        "max_abs_difference": diff,
    }
