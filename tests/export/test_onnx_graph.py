"""The ONNX route on random tiny regressors: every speaker fusion and both extractor layouts
convert through the same code, run in onnxruntime as in JAX, and keep padding invariance.

Each conversion is made once per module (`converted`, `folded`) and shared by the tests
that read it: jax2onnx's time grows faster than the graph, so the slow cases hold one
dimension."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_assets import tiny_assets

from papt_jax.export import checks, onnx_export
from papt_jax.export.graph import AUDIO, AUDIO_MASK, FRAMES, SPEAKER, PredictorGraph, pooled_name

TOLERANCE = 1e-4


def _require_onnx() -> None:
    for name in onnx_export.REQUIRED:
        pytest.importorskip(
            name, reason=f"needs {name}, of the optional 'export' packages (README: Export a model)"
        )


def _session(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, inputs):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _batch(lengths, rows=None, seed=0):
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), np.float32)
    mask = np.zeros(audio.shape, bool)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.uniform(-0.4, 0.4, n)
        mask[i, :n] = True
    batch = {AUDIO: audio, AUDIO_MASK: mask}
    if rows is not None:
        batch[SPEAKER] = np.asarray(rows, np.int32)
    return batch


# 'last'/group is the paper's model on a base layout (masked GroupNorm), both dimensions; the
# slow ones, one dimension each: 'prefix' changes the frame count inside the encoder, 'layer'
# normalises the waveform (large layout), 'none' has no speaker input. ('first' adds a vector
# as 'last' does, one layer earlier.)
CASES = {
    "last-group": ("last", "group", ("arousal", "valence")),
    "prefix-layer": ("prefix", "layer", ("valence",)),
    "none-layer": ("none", "layer", ("arousal",)),
}
SLOW = {"prefix-layer", "none-layer"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in CASES],
)
def converted(request, tmp_path_factory):
    """(graph, folder, files, the writer's check record) of one case, converted once."""
    _require_onnx()
    fusion, norm, dims = CASES[request.param]
    graph = PredictorGraph(tiny_assets(fusion, norm, dimensions=dims))
    folder = tmp_path_factory.mktemp(request.param)
    files, record = onnx_export.write(graph, folder, "tiny")
    return graph, folder, files, record


@pytest.mark.slow
def test_onnx_predictor_runs_as_jax_and_padded_rows_as_alone(converted):
    graph, folder, files, record = converted
    assert record["max_abs_difference"]["vs_jax"] <= TOLERANCE  # the writer's own check
    predictor, head = _session(folder / files["predictor"]), _session(folder / files["head"])
    assert [i.name for i in predictor.get_inputs()] == list(graph.input_names)
    shape = predictor.get_inputs()[0].shape
    assert shape == ["batch", "samples"], shape  # dynamic batch and time

    # Other lengths than the writer's check; rows of one batch get different speakers.
    lengths = (20_000, 3_333, 12_800, 401)
    rows = [4, 0, 2, 4] if graph.speaker_input else None
    batch = _batch(lengths, rows, seed=7)
    got = _run(predictor, batch)
    want = jax.device_get(jax.jit(graph.predict)(graph.weights, *batch.values()))
    np.testing.assert_array_equal(got[FRAMES], (np.asarray(lengths) - 400) // 320 + 1)
    for name in graph.output_names[:-1]:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=TOLERANCE, err_msg=name)
    for i, n in enumerate(lengths):
        alone = _run(predictor, {k: v[i : i + 1, :n] if v.ndim == 2 else v[i : i + 1]
                                 for k, v in batch.items()})  # fmt: skip
        for name in graph.output_names[:-1]:
            np.testing.assert_allclose(alone[name][0], got[name][i], rtol=0, atol=1e-5)
    pooled = {pooled_name(d): got[pooled_name(d)] for d in graph.dimensions}
    heads = _run(head, pooled)
    for dim in graph.dimensions:
        np.testing.assert_allclose(heads[dim], got[dim], rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """Speaker row 3 folded in, FFN weights over 1 MB: (assets, graph, folder, files)."""
    _require_onnx()
    assets = tiny_assets("last", "group", intermediate_size=10_000, dimensions=("valence",))
    graph = PredictorGraph(assets, speaker_row=3)
    folder = tmp_path_factory.mktemp("folded")
    files, _ = onnx_export.write(graph, folder, "tiny")  # checked against JAX inside
    return assets, graph, folder, files


@pytest.mark.slow
def test_a_speaker_folded_in_is_a_constant_row(folded):
    assets, _, folder, files = folded
    session = _session(folder / files["predictor"])
    assert [i.name for i in session.get_inputs()] == [AUDIO, AUDIO_MASK]
    batch = _batch((9_000, 4_000))
    free = PredictorGraph(assets)
    predict = jax.jit(free.predict)
    want = jax.device_get(predict(free.weights, *batch.values(), np.asarray([3, 3], np.int32)))
    other = jax.device_get(predict(free.weights, *batch.values(), np.asarray([1, 1], np.int32)))
    got = _run(session, batch)
    np.testing.assert_allclose(got["valence"], want["valence"], rtol=0, atol=TOLERANCE)
    assert np.abs(got["valence"] - other["valence"]).max() > 1e-3  # the row matters


@pytest.mark.slow
def test_weights_over_a_megabyte_go_beside_the_graph(folded, tmp_path):
    """HuBERT-large's weights exceed protobuf's 2 GB: large initialisers live in
    predictor.onnx.data, which model.json lists and onnxruntime finds after a move."""
    _, graph, folder, files = folded
    assert files["predictor_data"] == "predictor.onnx.data"
    assert (folder / "predictor.onnx.data").stat().st_size > 2 * 32 * 10_000 * 4
    assert (folder / "predictor.onnx").stat().st_size < 1_000_000
    moved = shutil.copytree(folder, tmp_path / "moved")
    batch = _batch((5_000, 3_000))
    got = _run(_session(moved / "predictor.onnx"), batch)
    want = jax.device_get(jax.jit(graph.predict)(graph.weights, *batch.values()))
    np.testing.assert_allclose(got["valence"], want["valence"], rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_the_writers_check_refuses_graphs_that_differ_from_jax():
    graph = PredictorGraph(tiny_assets("last", "group"))
    predict, head = jax.jit(graph.predict), jax.jit(graph.head)

    def off(batch):  # JAX itself, with valence shifted by twice the tolerance
        out = jax.device_get(predict(graph.weights, *batch.values()))
        return {**out, "valence": out["valence"] + 2 * checks.TOLERANCE}

    def head_run(pooled):
        return jax.device_get(head(graph.weights, pooled))

    with pytest.raises(checks.ExportCheckError, match="vs_jax differs by 0.0002"):
        checks.compare(graph, off, head_run, "off")


def test_the_newest_first_output_check_answers_as_jax2onnxs_own(tmp_path, monkeypatch):
    """On every call of a conversion, the swapped-in check (papt_jax/export/
    onnx_output_check.py) gives the original's answer, and the files are the same."""
    _require_onnx()
    # jax2onnx's plugins replace jnp.cumsum when they load (onnx_export.write puts it back):
    # restored after this test too.
    monkeypatch.setattr(jnp, "cumsum", jnp.cumsum)
    import jax2onnx
    import onnx_ir
    from jax2onnx.converter import output_binding

    from papt_jax.export.onnx_output_check import newest_first_output_check

    weight = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)

    def layer(x):  # an input, an initialiser and a few nodes for the check to look through
        h = jnp.tanh(x @ weight + 1.0)
        return (h * h).sum(-1) - h.mean(-1)

    spec = [jax.ShapeDtypeStruct((3, 6), jnp.float32)]

    def convert(name):
        path = tmp_path / f"{name}.onnx"
        jax2onnx.to_onnx(layer, spec, model_name="layer", return_mode="file", output_path=str(path))
        return path.read_bytes()

    original = output_binding._value_is_graph_connected
    plain = convert("plain")
    answers = []
    with newest_first_output_check() as swapped:
        assert swapped
        newest_first = output_binding._value_is_graph_connected

        def both(ctx, value):
            answers.append((original(ctx, value), newest_first(ctx, value)))
            stranger = onnx_ir.Value(name="in_no_graph")  # connected to nothing: both say no
            answers.append((original(ctx, stranger), newest_first(ctx, stranger)))
            return answers[-2][1]

        output_binding._value_is_graph_connected = both
        checked = convert("checked")
    assert output_binding._value_is_graph_connected is original  # put back after the block
    assert len(answers) > 5 and all(a == b for a, b in answers), answers
    assert {a for a, _ in answers} == {True, False}
    assert checked == plain
