"""StableHLO files of a tiny predictor: written, read back as a user would, and checked.

The fast tier exercises `export/stablehlo.py` here on a tiny model with no speaker input;
the export of a trained run (tests/export/test_portable.py, slow) covers it end to end.
"""

from __future__ import annotations

import jax
import numpy as np
from tiny_assets import tiny_assets

from papt_jax.export import stablehlo
from papt_jax.export.graph import AUDIO, AUDIO_MASK, PredictorGraph


def test_the_files_reload_and_predict_as_the_graph(tmp_path):
    graph = PredictorGraph(tiny_assets("none", "group", dimensions=("arousal",)))
    files, record = stablehlo.write(graph, tmp_path)
    assert record["platforms"] == list(stablehlo.PLATFORMS)
    # Read back apart from the writer's own check: a padded row predicts as the graph does.
    loaded = jax.export.deserialize(bytearray((tmp_path / files["predictor"]).read_bytes()))
    with np.load(tmp_path / files["weights"]) as z:
        weights = {k: z[k] for k in z.files}
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.4, 0.4, (2, 4000)).astype(np.float32)
    mask = np.ones(audio.shape, bool)
    mask[1, 2500:] = False
    audio[1, 2500:] = 0.0
    batch = {AUDIO: audio, AUDIO_MASK: mask}
    got = jax.device_get(loaded.call(weights, *batch.values()))
    want = jax.device_get(jax.jit(graph.predict)(graph.weights, *batch.values()))
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
