"""End to end per family: each family's `:smoke` runs the pipeline from the command line.

Each run bootstraps a tiny encoder of its family from scratch on the embedded corpus, then
PAPT, fine-tuning and evaluation with PLDC, as `configs/papt.py:smoke` does for HuBERT
(tests/test_main_e2e.py), each pre-training with its family's own objective. The runs stop
after evaluation and fine-tune arousal only: the report reads only the evaluation's arrays
and valence takes arousal's code path, whatever the family, and the HuBERT smoke run covers
both.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures.main_runs import UP_TO_EVALUATE, run_main

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
    extra = []
    if family == "wavlm":  # WavLM mixes noise too: a folder of two noise files
        import soundfile

        rng = np.random.default_rng(0)
        (tmp_path / "noise").mkdir()
        for name, seconds in (("hum.wav", 0.5), ("hiss.flac", 4.0)):
            noise = 0.2 * rng.uniform(-1, 1, int(seconds * 16_000))
            soundfile.write(tmp_path / "noise" / name, noise.astype(np.float32), 16_000)
        extra = [f"--config.pretrain.noise_dir={tmp_path / 'noise'}"]
    run = run_main(
        tmp_path / "w",
        f"--config={config}:smoke",
        f"--config.stages={','.join(UP_TO_EVALUATE)}",
        "--config.finetune.dimensions=arousal",
        *extra,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    workdir = run.workdir
    for stage in UP_TO_EVALUATE:
        assert (workdir / "stages" / f"{stage}.json").is_file(), stage
    for encoder in ("bootstrap", "pretrain"):
        values = json.loads((workdir / encoder / "encoder" / "config.json").read_text())
        assert values["family"] == family, encoder
    # Each family pre-trains with its own objective (pretrain.objective='auto').
    facts = json.loads((workdir / "stages" / "pretrain.json").read_text())["facts"]
    labels = json.loads((workdir / "stages" / "pseudo_labels.json").read_text())["facts"]
    metrics = (workdir / "pretrain" / "logs" / "metrics.jsonl").read_text()
    if family == "wav2vec2":
        assert facts["objective"] == "contrastive" and not facts["utterance_mixing"]
        assert labels == {"needed": False}  # no pseudo-labels, no teacher
        for encoder in ("bootstrap", "pretrain"):
            # Bootstrapped contrastively, its quantizer continued by PAPT and saved.
            assert (workdir / encoder / "encoder" / "quantizer_config.json").is_file()
        assert facts["head"] == "checkpoint's quantizer"
        for name in ("contrastive", "diversity", "code_perplexity", "temperature"):
            assert f'"train/{name}"' in metrics, name
    else:
        assert facts["objective"] == "masked_prediction"
        assert facts["utterance_mixing"] == (family == "wavlm")
        # Both noise files reached the bank (the bootstrap mixes them in too).
        assert facts["noise_files"] == (2 if family == "wavlm" else 0)
        if family == "wavlm":
            assert "noise bank: 2 file(s)" in run.stderr and "(1 cropped)" in run.stderr
        assert labels["num_clusters"] > 0
        assert '"train/contrastive"' not in metrics
    evaluated = json.loads((workdir / "stages" / "evaluate.json").read_text())["facts"]
    assert evaluated["results"] == ["test-b_arousal.npz", "test-c_arousal.npz"]
    for name in evaluated["results"]:
        with np.load(workdir / "evaluate" / name) as z:
            assert len(z["keys"]) > 0, name
            for key in ("predictions", "calibrated_mu", "calibrated_sigma", "calibrated_both"):
                assert np.isfinite(z[key]).all(), (name, key)
            # PLDC moved the predictions (a speaker-level shift, not a copy).
            assert not np.allclose(z["calibrated_both"], z["predictions"]), name
