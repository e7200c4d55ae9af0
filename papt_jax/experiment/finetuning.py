"""Fine-tuning stages: B2's speaker weights, the regressors (optionally on a speaker subset),
and loading a fine-tuned model back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from papt_jax import progress
from papt_jax.experiment import settings
from papt_jax.experiment.workspace import Workspace, atomic_dir, remove, with_speakers
from papt_jax.train import checkpoint, finetune

log = logging.getLogger(__name__)

# The fine-tuned model's settings (`finetune.RegressorConfig`), written last: its presence
# marks the model complete.
MODEL_CONFIG_FILE = "regressor_config.json"

csv = settings.csv


def _compare_features(ws: Workspace, split: str, out: Path) -> dict[str, np.ndarray]:
    """ComParE functionals of every utterance of `split`, cached in `out` (an .npz)."""
    from papt_jax import b2

    if out.is_file():
        with np.load(out) as z:
            return {k: z[k] for k in z.files}
    batches, total = ws.eval_batches(split)
    keys, speakers, rows = [], [], []
    for batch in progress.bar(batches(), total=total, desc=f"B2 ComParE {split}", unit="batches"):
        lengths = batch["audio_mask"].sum(axis=1)
        real = np.flatnonzero(batch["example_mask"])
        rows.append(
            b2.compare_functionals(
                [batch["audio"][r, : lengths[r]] for r in real],
                keys=[str(batch["key"][r]) for r in real],
            )
        )
        keys += [str(batch["key"][r]) for r in real]
        speakers += [int(batch["speaker"][r]) for r in real]
    features = {
        "key": np.asarray(keys),
        "speaker": np.asarray(speakers, np.int32),
        "features": np.concatenate(rows),
    }
    tmp = out.with_name(out.name + ".partial.npz")
    np.savez(tmp, **features)
    tmp.replace(out)
    return features


def run_speaker_weights(ws: Workspace) -> dict[str, Any]:
    """B2 (Sridhar & Busso 2022): training-speaker loss weights from test-speaker audio."""
    from papt_jax import b2

    if ws.config.finetune.speaker_weighting != "b2":
        return {"needed": False}
    c = ws.config.b2
    out = ws.stage_dir("speaker_weights")
    train = _compare_features(ws, "train", out / "compare_train.npz")
    test = _compare_features(ws, c.test_split, out / f"compare_{c.test_split}.npz")
    result = b2.b2_weights(
        train["features"],
        train["speaker"],
        test["features"],
        test["speaker"],
        b2.B2Config(
            pca_components=int(c.pca_components),
            gmm_components=int(c.gmm_components),
            neighbours=int(c.neighbours),
            weight=float(c.weight),
            seed=int(ws.config.seed),
        ),
    )
    table = np.ones(ws.num_speakers(), np.float64)
    for speaker, weight in result.speaker_weight.items():
        table[int(speaker)] = weight
    facts = {
        "train_speakers": [int(s) for s in result.train_speakers],
        "adaptation_speakers": [int(s) for s in result.adaptation_speakers],
        "weights": table.tolist(),
        "test_split": c.test_split,
    }
    (out / "weights.json").write_text(json.dumps(facts, indent=1))
    log.info(
        "B2: %d of %d training speakers form the adaptation set (weight %.3f vs %.3f)",
        len(result.adaptation_speakers),
        len(result.train_speakers),
        table.max(),
        table.min(),
    )
    return {"adaptation_speakers": len(result.adaptation_speakers)}


def speaker_weights_of(ws: Workspace) -> tuple[float, ...] | None:
    """The B2 loss weight of every speaker index, or None without B2."""
    if ws.config.finetune.speaker_weighting != "b2":
        return None
    facts = json.loads(ws.path("speaker_weights", "weights.json").read_text())
    return tuple(facts["weights"])


def _finetune_encoder(ws: Workspace):
    if ws.config.finetune.init == "pretrain":
        encoder = ws.load_encoder("pretrain")
        return with_speakers(
            encoder, encoder.config.speaker_fusion, encoder.config.num_speakers, ws.config
        )
    return with_speakers(ws.load_encoder(ws.config.model.init), "none", 0, ws.config)


def _finetune_setup(ws: Workspace, dimension: str):
    """(model settings, optimiser settings, initial encoder weights) for `dimension`."""
    f = ws.config.finetune
    enc_cfg, enc_params = _finetune_encoder(ws)
    model = finetune.RegressorConfig(
        encoder_config=enc_cfg,
        dimension=dimension,
        label_scaling=f.label_scaling,
        head_dropout=float(f.head_dropout),
        freeze_feature_extractor=bool(f.freeze_feature_extractor),
    )
    settings = finetune.FinetuneSettings(
        epochs=int(f.epochs),
        peak_lr=float(f.peak_lr),
        schedule=f.schedule,
        warmup_fraction=float(f.warmup_fraction),
        clip_norm=float(f.clip_norm),
        patience=int(f.patience),
        speaker_weights=speaker_weights_of(ws),
        log_every=int(ws.config.log_every),
        stop_after_steps=int(f.stop_after_steps),
        checkpoint_every_minutes=float(ws.config.train.checkpoint_every_minutes),
        seed=int(ws.config.seed),
    )
    return model, settings, enc_params


def finetune_speakers(ws: Workspace) -> tuple[str, set[str] | None]:
    """(splits, speakers) that fine-tuning trains on.

    All of `train` by default. With `finetune.train_speakers = k` (the personalization-gap
    experiment, paper Figure 1): the first k training speakers of one seeded order, so the
    subsets for growing k are nested. With `finetune.speaker_dependent`, the last of those
    k make room for test-a's speakers and test-a is added: as many speakers, some of them
    the test speakers (a speaker-dependent model).
    """
    f = ws.config.finetune
    k = int(f.train_speakers)
    if not k:
        return "train", None
    train = sorted(set(ws.record_speakers("train") or []))
    if k > len(train):
        raise settings.ConfigError(
            f"--config.finetune.train_speakers={k} but the training set has {len(train)} speakers"
        )
    order = np.random.default_rng(int(ws.config.seed)).permutation(len(train))
    chosen = [train[i] for i in order[:k]]
    if not f.speaker_dependent:
        return "train", set(chosen)
    test_a = sorted(set(ws.record_speakers("test_a") or []))
    if k <= len(test_a):
        raise settings.ConfigError(
            f"--config.finetune.train_speakers={k}: a speaker-dependent model needs more "
            f"than test-a's {len(test_a)} speakers"
        )
    return "train,test_a", set(chosen[: k - len(test_a)]) | set(test_a)


def model_problem(out: Path) -> str | None:
    """Why `out/model` (with `out/result.json`) is not a complete fine-tuned model, or None."""
    if not (out / "model" / MODEL_CONFIG_FILE).is_file():
        return f"{out / 'model' / MODEL_CONFIG_FILE} is missing"
    if not (out / "result.json").is_file():
        return f"{out / 'result.json'} is missing"
    problem = checkpoint.manifest_problem(out / "model" / "variables", contents=False)
    return None if problem is None else f"{out / 'model' / 'variables'}: {problem}"


def run_finetune(ws: Workspace) -> dict[str, Any] | None:
    facts = {}
    for dimension in csv(ws.config.finetune.dimensions):
        out = ws.stage_dir("finetune", dimension)
        problem = model_problem(out)
        if problem is None:
            log.info("finetune[%s]: done earlier", dimension)
            facts[dimension] = json.loads((out / "result.json").read_text())
            continue
        if (out / "model").exists():
            # Written again from its checkpoints (the training itself is not repeated).
            log.warning("finetune[%s]: the saved model is rewritten: %s", dimension, problem)
            remove(out / "model")
        model, settings, enc_params = _finetune_setup(ws, dimension)
        splits, speakers = finetune_speakers(ws)
        train_data = ws.train_data(splits, seed_offset=1, speakers=speakers)
        eval_batches, _ = ws.eval_batches("validation")
        result, best = finetune.run_finetuning(
            model, settings, enc_params, train_data, eval_batches, ws.mesh, str(out)
        )
        if not result.finished:
            log.info("finetune[%s] stopped at step %d; run again to resume", dimension, result.step)
            return None
        facts[dimension] = {
            "best_ccc": result.best,
            "steps": result.step,
            "train_splits": splits,
            "train_speakers": None if speakers is None else sorted(speakers),
        }
        (out / "result.json").write_text(json.dumps(facts[dimension]))
        with atomic_dir(out / "model") as tmp:
            checkpoint.save_tree(tmp / "variables", best)
            # Written last: its presence marks the model complete.
            (tmp / MODEL_CONFIG_FILE).write_text(model.to_json())
    return facts


def load_finetuned(ws: Workspace, dimension: str):
    """(`finetune.RegressorConfig`, variables) of the fine-tuned model for `dimension`."""
    out = ws.path("finetune", dimension, "model")
    model = finetune.RegressorConfig.from_json((out / MODEL_CONFIG_FILE).read_text())
    return model, checkpoint.restore_tree(out / "variables")
