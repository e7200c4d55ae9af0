"""End to end: a stage that starts over clears what its earlier attempt left.

A training stage is resumable, so its folder is kept when it starts again; what it made
before its checkpoints (the bootstrap's MFCC pseudo-labels) must then be checked, not
trusted.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from fixtures.main_runs import run_main
from test_main_e2e import _forget_from, copy_run

pytestmark = pytest.mark.slow


def test_damaged_labels_of_an_unfinished_bootstrap_restart_it(smoke_run, tmp_path):
    from papt_jax.convert import load_converted

    w = copy_run(smoke_run, tmp_path)
    expected = load_converted(w / "bootstrap" / "encoder").params
    _forget_from(w, "bootstrap")  # started, not finished: it resumes from its checkpoints
    labels = w / "bootstrap" / "pseudo_labels" / "labels.npz"
    labels.write_bytes(labels.read_bytes()[:200])
    run = run_main(w, "--config=configs/papt.py:smoke", "--config.stages=bootstrap")
    # Before: "delete .../labels.npz and rerun the pseudo_labels stage" on every rerun.
    assert run.returncode == 0, run.stderr[-4000:]
    assert "bootstrap: starts over: its MFCC pseudo-labels are damaged" in run.stderr
    got = dict(
        jax.tree_util.tree_leaves_with_path(load_converted(w / "bootstrap" / "encoder").params)
    )
    for path, value in jax.tree_util.tree_leaves_with_path(expected):
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(value))
