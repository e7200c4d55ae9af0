"""jax2onnx's check that each converted equation's outputs are in the graph, newest first.

jax2onnx (0.17.1, the version `requirements-nodeps.txt` pins) checks after lowering each
equation that every output value it bound is produced by the graph: an input, an
initialiser or the output of some node. It scans the nodes from the first, so the check
costs the size of the graph each time and the conversion grows with its square; the value
looked for is almost always an output of the node the equation has just appended.

`newest_first_output_check` swaps in the same test with the nodes scanned from the last:
the same set of values, so the same answer on every call (`tests/export/test_onnx_graph.py`
compares the two call by call) and byte-identical files. `python
benchmarks/onnx_output_check.py` converting both regressors: tiny, 3.5 -> 1.6 s; base with
unrolled layers (`scan_layers=False`), 36.8 -> 10.0 s (BENCHMARKS.md). It leaves jax2onnx
alone when that function or the helper it compares with is missing (another version).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def newest_first_output_check() -> Iterator[bool]:
    """Within the block, jax2onnx's graph-connection check scans the newest nodes first.

    Yields:
      True when the check was swapped in, False when jax2onnx has no such function.
    """
    try:
        from jax2onnx.converter import output_binding
    except ImportError:
        yield False
        return
    original = getattr(output_binding, "_value_is_graph_connected", None)
    matches = getattr(output_binding, "_value_matches_reference", None)
    if original is None or matches is None:
        yield False
        return

    def value_is_graph_connected(ctx: Any, value: Any) -> bool:
        builder = ctx.builder
        return (
            any(matches(out, value) for node in reversed(builder.nodes) for out in node.outputs)
            or any(matches(existing, value) for existing in builder.inputs)
            or any(matches(existing, value) for existing in builder.initializers)
        )

    output_binding._value_is_graph_connected = value_is_graph_connected
    try:
        yield True
    finally:
        output_binding._value_is_graph_connected = original
