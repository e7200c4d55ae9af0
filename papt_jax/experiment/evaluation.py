"""Evaluation stages: the seen/unseen protocol with PLDC, and the report."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from papt_jax.data import input_pipeline
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.eval import evaluate as evaluate_lib
from papt_jax.eval.results import load_result, save_result
from papt_jax.experiment import settings
from papt_jax.experiment.finetuning import load_finetuned
from papt_jax.experiment.workspace import Workspace, atomic_dir, with_speakers
from papt_jax.models.hubert import HubertModel
from papt_jax.train import finetune

log = logging.getLogger(__name__)

csv = settings.csv


def run_evaluate(ws: Workspace) -> dict[str, Any]:
    k = int(ws.config.evaluate.pldc_k)
    splits = [s for s in csv(ws.config.evaluate.splits) if ws.has_split(s)]
    missing = sorted(set(csv(ws.config.evaluate.splits)) - set(splits))
    if missing:
        log.warning("evaluate: splits %s were not built (no newer-release labels?)", missing)
    train_batches, _ = ws.eval_batches("train")
    original = None
    if "test_c" in splits:
        # Speaker retrieval for unseen speakers uses the encoder before adaptation.
        enc_cfg, enc_params = with_speakers(
            ws.load_encoder(ws.config.model.init), "none", 0, ws.config
        )
        encode = evaluate_lib.make_encode_step(HubertModel(enc_cfg), ws.mesh)
        test_c_batches, _ = ws.eval_batches("test_c")
        original = {
            "train": evaluate_lib.encode_pooled(
                encode, enc_params, train_batches(), ws.mesh, "evaluate: original encoder, train"
            ),
            "test_c": evaluate_lib.encode_pooled(
                encode, enc_params, test_c_batches(), ws.mesh, "evaluate: original encoder, test_c"
            ),
        }
    written = []
    with atomic_dir(ws.path("evaluate")) as tmp:
        (tmp / "passes").mkdir()
        if original is not None:
            evaluate_lib.save_passes(original, tmp / "passes" / "original_encoder.npz")
        for number, dimension in enumerate(csv(ws.config.finetune.dimensions)):
            run, variables = load_finetuned(ws, dimension)
            predict_step = finetune.make_predict_step(run.model(), run.scaling(), ws.mesh)
            results, passes = evaluate_lib.evaluate_dimension(
                predict_step,
                variables,
                dimension,
                train_batches(),
                {split: ws.eval_batches(split)[0]() for split in splits},
                original,
                ws.mesh,
                k,
            )
            # The proxies come from the original encoder: the same for every dimension.
            if number == 0 and "test_c" in passes:
                log.info(
                    "test-c: proxy training speaker of each unseen speaker: %s",
                    evaluate_lib.unseen_proxies(passes),
                )
            # Pooled representations and predictions of every pass, for the shift analysis
            # and for prediction on new audio (PLDC's reference speakers).
            evaluate_lib.save_passes(passes, tmp / "passes" / f"{dimension}.npz")
            for result in results:
                save_result(result, tmp / f"{result.stem}.npz")
                written.append(f"{result.stem}.npz")
    return {"results": written, "pldc_k": k, "shortest_train_s": shortest_train_seconds(ws)}


def shortest_train_seconds(ws: Workspace) -> float:
    """Duration of the training split's shortest utterance: prediction refuses clips much
    shorter than anything the model was trained on (`papt_jax.predict.limits`)."""
    lengths = input_pipeline.load_index(ws.data_dir, "train").num_samples
    return round(float(lengths.min()) / SAMPLE_RATE, 4)


def evaluation_fingerprint(
    record: dict[str, Any], record_of: Callable[[str], dict[str, Any] | None]
) -> str:
    """A hash of the settings everything the evaluation's numbers depend on: the evaluate
    record's fingerprint and those of every stage it read, directly or not (fine-tuning,
    pre-training, pseudo-labels, the dataset...). Evaluations of models trained with other
    settings differ; a run resumed after a kill, which rebuilds the same models from the same
    settings, keeps it.

    Args:
      record: the evaluate stage's record.
      record_of: stage name -> its completion record (`Workspace.record`).
    """
    chain = {"evaluate": record.get("fingerprint")}
    pending = list(record.get("inputs") or {})
    while pending:
        stage = pending.pop()
        if stage not in chain:
            upstream = record_of(stage) or {}
            chain[stage] = upstream.get("fingerprint")
            pending += list(upstream.get("inputs") or {})
    text = json.dumps(chain, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_report(ws: Workspace) -> dict[str, Any]:
    # Imported here: the report's statistics and figures (SciPy, matplotlib) take about a
    # second to import, which every run that stops earlier or reuses its report would pay.
    from papt_jax.eval import report as report_lib

    paths = sorted(ws.path("evaluate").glob("*.npz"))
    results = [load_result(p) for p in paths]
    record = ws.record("evaluate") or {}
    k = (record.get("facts") or {}).get("pldc_k")
    run = {"PLDC k": k, "evaluation fingerprint": evaluation_fingerprint(record, ws.record)}
    # The saved passes feed the retrieval diagnostic and the speaker-shift analysis.
    references = report_lib.load_references(ws.path("evaluate", "passes"), results, k)
    with atomic_dir(ws.path("report")) as tmp:
        report_lib.write_report(results, tmp, ws.config.name, run=run, references=references)
    return {"results_md": str(ws.path("report", "results.md"))}
