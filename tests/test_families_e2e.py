"""End to end per family: each family's `:smoke` runs the whole pipeline from the command line.

Each run bootstraps a tiny encoder of its family from scratch on the embedded corpus, then
PAPT, fine-tuning, evaluation with PLDC and the report, as `configs/papt.py:smoke` does for
HuBERT (tests/test_main_e2e.py).
"""

from __future__ import annotations

import json

import pytest
from fixtures.main_runs import run_main

from papt_jax.experiment.settings import STAGES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "config, family",
    [
        ("configs/papt_wav2vec2.py", "wav2vec2"),
        ("configs/papt_wavlm.py", "wavlm"),
        ("configs/papt_data2vec.py", "data2vec_audio"),
    ],
)
def test_family_smoke_runs_end_to_end(config, family, tmp_path):
    run = run_main(tmp_path / "w", f"--config={config}:smoke")
    assert run.returncode == 0, run.stderr[-4000:]
    workdir = run.workdir
    for stage in STAGES:
        assert (workdir / "stages" / f"{stage}.json").is_file(), stage
    for encoder in ("bootstrap", "pretrain"):
        values = json.loads((workdir / encoder / "encoder" / "config.json").read_text())
        assert values["family"] == family, encoder
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    assert set(summary["splits"]) == {"test-b", "test-c"}
    assert "| + (μ, σ) shift |" in run.stdout
