"""`--format onnx`: the predictor and its head as ONNX graphs, converted from JAX by jax2onnx.

Route: the JAX functions of `graph.PredictorGraph` are traced with symbolic `batch` and
`samples` dimensions (and `rows` for the head) and replayed primitive by primitive
(`jaxpr_replay`) into `jax2onnx.to_onnx`, so the graph is the very computation papt_jax runs:
masked GroupNorm, masked attention, zeroed padded frames, speaker fusion, pooling and heads,
for any encoder built from `papt_jax.models`. The weights are initialisers; jax2onnx stores
those over 1 MB in `predictor.onnx.data` beside the graph (ONNX external data, which keeps
HuBERT-large under protobuf's 2 GB limit); onnxruntime finds it next to the graph.

Files: `predictor.onnx` (inputs `audio`, `audio_mask`[, `speaker`]; outputs `<dim>`,
`<dim>_pooled`, `frames`) and `head.onnx` (inputs `<dim>_pooled`; outputs `<dim>`). Both are
checked with onnxruntime against JAX (`checks.compare`) before the folder is complete.

Needs the optional packages onnx, onnxruntime and jax2onnx (`MissingDependencyError`).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from papt_jax.errors import UserError
from papt_jax.export import checks
from papt_jax.export.graph import PredictorGraph, pooled_name, symbolic_audio_shape
from papt_jax.export.jaxpr_replay import replayable
from papt_jax.export.onnx_output_check import newest_first_output_check

PREDICTOR_FILE = "predictor.onnx"
HEAD_FILE = "head.onnx"
REQUIRED = ("onnx", "onnxruntime", "jax2onnx")
# ONNX opset of the graphs (jax2onnx's default; onnxruntime >= 1.20 runs it).
OPSET = 23
INSTALL_HINT = (
    "install the 'export' extra: pip install -e '.[export]' and then "
    "pip install --no-deps jax2onnx==0.17.1 (its metadata asks for an older orbax; see the "
    "README, section 'Export a model')"
)


class MissingDependencyError(UserError, ImportError):
    """An optional package the chosen format needs is not installed."""


def require() -> None:
    """Raises `MissingDependencyError` naming every missing package of `REQUIRED`."""
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        which = "which is" if len(missing) == 1 else "which are"
        raise MissingDependencyError(
            f"--format onnx needs {', '.join(missing)}, {which} not installed", hint=INSTALL_HINT
        )


def _quiet() -> None:
    # jax2onnx logs a traceback for every optional plugin whose package is absent, and
    # onnx_ir warns about values it leaves untyped; neither concerns the exported graph.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # unused-initialiser notices are not problems
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _runner(session):
    names = [o.name for o in session.get_outputs()]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


def write(graph: PredictorGraph, folder: Path, model_name: str) -> tuple[dict, dict]:
    """Writes and checks `predictor.onnx` and `head.onnx` in `folder`.

    Returns:
      ({role: file name}, the check's record from `checks.compare`).

    Raises:
      MissingDependencyError: onnx, onnxruntime or jax2onnx is missing.
      checks.ExportCheckError: the graphs differ from JAX.
    """
    require()
    import onnxruntime

    _quiet()
    # Loading jax2onnx's plugins replaces jnp.cumsum for the rest of the process (with a
    # wrapper of its own); the replayed functions never call jax.numpy, so put it back.
    cumsum = jnp.cumsum
    try:
        with newest_first_output_check():  # the same files, without its quadratic scan
            files = _convert(graph, folder, model_name)
    finally:
        jnp.cumsum = cumsum
    record = checks.compare(
        graph,
        _runner(_session(folder / PREDICTOR_FILE)),
        _runner(_session(folder / HEAD_FILE)),
        f"{PREDICTOR_FILE}/{HEAD_FILE}",
    )
    record["runtime"] = f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    record["converter"] = f"jax2onnx {_version('jax2onnx')}, opset {OPSET}"
    return files, record


def _convert(graph: PredictorGraph, folder: Path, model_name: str) -> dict[str, str]:
    """Converts the predictor and the head; {role: file name} of what was written."""
    import jax2onnx

    batch, samples = symbolic_audio_shape()
    specs = graph.input_specs(batch, samples)

    def predict(*arrays):
        out = graph.predict(graph.weights, *arrays)
        return tuple(out[name] for name in graph.output_names)

    jax2onnx.to_onnx(
        replayable(predict, specs),
        specs,
        model_name=model_name,
        opset=OPSET,
        input_names=list(graph.input_names),
        output_names=list(graph.output_names),
        return_mode="file",
        output_path=str(folder / PREDICTOR_FILE),
    )
    (rows,) = jax.export.symbolic_shape("rows")
    head_specs = [
        jax.ShapeDtypeStruct((rows, graph.hidden_size[d]), jnp.float32) for d in graph.dimensions
    ]

    def head(*pooled):
        named = {pooled_name(d): p for d, p in zip(graph.dimensions, pooled, strict=True)}
        out = graph.head(graph.weights, named)
        return tuple(out[d] for d in graph.dimensions)

    jax2onnx.to_onnx(
        replayable(head, head_specs),
        head_specs,
        model_name=f"{model_name}_head",
        opset=OPSET,
        input_names=[pooled_name(d) for d in graph.dimensions],
        output_names=list(graph.dimensions),
        return_mode="file",
        output_path=str(folder / HEAD_FILE),
    )
    files = {"predictor": PREDICTOR_FILE, "head": HEAD_FILE}
    for role, name in list(files.items()):
        if (folder / f"{name}.data").is_file():  # weights over 1 MB, beside the graph
            files[f"{role}_data"] = f"{name}.data"
    return files


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
