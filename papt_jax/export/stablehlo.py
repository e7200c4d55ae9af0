"""`--format stablehlo`: the predictor and its head serialised with `jax.export`.

`predictor.jax` is `jax.export`'s serialisation of `PredictorGraph.predict` with symbolic
`batch` and `samples` dimensions (samples >= 400; the frame count `(samples - 400) // 320 + 1`
is symbolic arithmetic inside), lowered for cpu, cuda and tpu; `head.jax` is the head alone,
with a symbolic `rows`. Both take the weights as their first argument, a flat
`{name: array}` stored in `weights.npz`, so the graphs stay small whatever the model's size
and loading needs only jax and numpy:

    exported = jax.export.deserialize(bytearray(open("predictor.jax", "rb").read()))
    outputs = exported.call(dict(np.load("weights.npz")), audio, audio_mask[, speaker])

(the README has the full example, which a test runs). Calling it on a platform it was not
lowered for is refused by JAX.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.export import checks
from papt_jax.export.graph import PredictorGraph, pooled_name, symbolic_audio_shape

PREDICTOR_FILE = "predictor.jax"
HEAD_FILE = "head.jax"
WEIGHTS_FILE = "weights.npz"
PLATFORMS = ("cpu", "cuda", "tpu")


def _weight_specs(graph: PredictorGraph) -> dict[str, jax.ShapeDtypeStruct]:
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in graph.weights.items()}


def write(graph: PredictorGraph, folder: Path) -> tuple[dict, dict]:
    """Writes and checks `predictor.jax`, `head.jax` and `weights.npz` in `folder`.

    Returns:
      ({role: file name}, the check's record from `checks.compare`).

    Raises:
      checks.ExportCheckError: the deserialised graphs differ from JAX.
    """
    batch, samples = symbolic_audio_shape()
    weights = _weight_specs(graph)
    predict = jax.export.export(jax.jit(graph.predict), platforms=PLATFORMS)(
        weights, *graph.input_specs(batch, samples)
    )
    (rows,) = jax.export.symbolic_shape("rows")
    pooled = {
        pooled_name(d): jax.ShapeDtypeStruct((rows, graph.hidden_size[d]), jnp.float32)
        for d in graph.dimensions
    }
    head = jax.export.export(jax.jit(graph.head), platforms=PLATFORMS)(weights, pooled)
    (folder / PREDICTOR_FILE).write_bytes(predict.serialize())
    (folder / HEAD_FILE).write_bytes(head.serialize())
    np.savez(folder / WEIGHTS_FILE, **graph.weights)

    # The check reads the files back, as a user would.
    with np.load(folder / WEIGHTS_FILE) as z:
        stored = {k: z[k] for k in z.files}
    loaded = jax.export.deserialize(bytearray((folder / PREDICTOR_FILE).read_bytes()))
    loaded_head = jax.export.deserialize(bytearray((folder / HEAD_FILE).read_bytes()))
    record = checks.compare(
        graph,
        lambda inputs: jax.device_get(loaded.call(stored, *inputs.values())),
        lambda pooled: jax.device_get(loaded_head.call(stored, pooled)),
        f"{PREDICTOR_FILE}/{HEAD_FILE}",
    )
    record["runtime"] = f"jax {jax.__version__} ({jax.default_backend()})"
    record["platforms"] = list(predict.platforms)
    files = {"predictor": PREDICTOR_FILE, "head": HEAD_FILE, "weights": WEIGHTS_FILE}
    return files, record
