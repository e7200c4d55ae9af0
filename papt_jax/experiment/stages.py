"""The stages of an experiment: one short function each, and the table that describes them.

  corpus -> prepare -> bootstrap -> pseudo_labels -> pretrain -> finetune -> evaluate -> report

Each `Stage` says which stages it reads (`needs`), which config keys decide its outputs
(`keys`: the fingerprint that `run.py` compares on a rerun), where its outputs live
(`outputs`: removed when the stage must be redone) and whether a started attempt can be
resumed (training stages resume from their checkpoints; the others start over).

A stage function returns a dict of facts for its completion record, or None when it
stopped early on purpose (`stop_after_steps`) and should resume on the next run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import tqdm

from papt_jax import pseudo_labels as pseudo_labels_lib
from papt_jax.eval import evaluate as evaluate_lib
from papt_jax.eval import report as report_lib
from papt_jax.eval.results import load_result, save_result
from papt_jax.experiment import settings
from papt_jax.experiment.workspace import Workspace, atomic_dir, random_encoder, with_speakers
from papt_jax.models.config import HubertConfig, get_preset
from papt_jax.models.hubert import HubertModel
from papt_jax.train import checkpoint, finetune, pretrain

log = logging.getLogger(__name__)

csv = settings.csv

# The encoder's dropout rates that pre-training sets from the config (the HuBERT recipe).
DROPOUT_KEYS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout")

# Keys that change only speed or logging, never what a stage writes.
SPEED_ONLY_KEYS = ("num_devices", "log_every", "data.worker_count", "model.remat")


# --- corpus and dataset -------------------------------------------------------------------


def run_corpus(ws: Workspace) -> dict[str, Any]:
    preset = ws.config.data.synthetic_preset
    if not preset:
        return {"corpus": str(ws.corpus_dir)}
    from papt_jax.data import synthetic

    with atomic_dir(ws.corpus_dir) as tmp:
        synthetic.generate_corpus(tmp, preset=preset, seed=int(ws.config.seed), overwrite=True)
    return {"corpus": str(ws.corpus_dir)}


def corpus_config(ws: Workspace):
    """The MSP-Podcast reader options of this run."""
    from papt_jax.data import msp_podcast

    d = ws.config.data
    splits = dict(msp_podcast.DEFAULT_SPLITS)
    splits.update(
        train=csv(d.train_splits), validation=csv(d.validation_splits), test=csv(d.test_splits)
    )
    return msp_podcast.CorpusConfig(
        corpus_dir=ws.corpus_dir,
        labels_file=Path(d.labels_file) if d.labels_file else None,
        new_labels_file=Path(d.new_labels_file) if d.new_labels_file else None,
        new_corpus_dir=Path(d.new_corpus_dir) if d.new_corpus_dir else None,
        splits=splits,
        test_c_splits=csv(d.new_test_splits),
        test_a_seconds=float(d.test_a_seconds),
        on_bad_rows=d.on_bad_rows,
        on_bad_audio=d.on_bad_audio,
        resample=bool(d.resample),
    )


def run_prepare(ws: Workspace) -> dict[str, Any]:
    from papt_jax.data import prepare

    out = prepare.prepare(corpus_config(ws), ws.data_dir)
    train_speakers = ws.split_speakers("train")
    if train_speakers is not None:
        settings.validate_against_data(ws.config, train_speakers)
    return {"dataset": str(out)}


# --- pseudo-labels and pre-training ------------------------------------------------------------


def _compute_labels(
    ws: Workspace, out_dir: Path, source: str, teacher_spec: str, layer: int, num_clusters: int
) -> None:
    """Clusters frame features of the adaptation audio into `out_dir` (written atomically)."""
    p = ws.config.pseudo_labels
    if source == "mfcc":
        feature_fn, rate = pseudo_labels_lib.mfcc_feature_fn()
    else:
        teacher = ws.load_encoder(teacher_spec)
        if layer > teacher.config.num_hidden_layers:
            raise settings.ConfigError(
                f"--config.pseudo_labels.layer={layer} but the teacher has "
                f"{teacher.config.num_hidden_layers} layers"
            )
        cfg, params = with_speakers(teacher, "none", 0, ws.config)
        feature_fn, rate = pseudo_labels_lib.teacher_feature_fn(HubertModel(cfg), params, layer)
    batches, n = ws.eval_batches(
        ws.config.pretrain.train_splits + "," + ws.config.pretrain.eval_split
    )
    with atomic_dir(out_dir) as tmp:
        pseudo_labels_lib.compute_pseudo_labels(
            batches,
            feature_fn,
            rate,
            pseudo_labels_lib.PseudoLabelConfig(
                num_clusters=num_clusters,
                fit_fraction=float(p.fit_fraction),
                batch_size=int(p.kmeans_batch_size),
                max_iter=int(p.kmeans_max_iter),
                n_init=int(p.kmeans_n_init),
                seed=int(ws.config.seed),
                centroids_path=p.centroids if source == p.source else "",
            ),
            str(tmp),
            total_batches=n,
        )


def _head(encoder, num_clusters: int, final_dim: int, own_labels: bool):
    """The pre-training head: the checkpoint's only when the labels are its own.

    A converted fairseq head scores the cluster ids of the k-means that labelled its
    pre-training; a freshly fitted k-means numbers its clusters differently, so its head
    would start from wrong label embeddings. The user says the labels are the checkpoint's
    own by supplying that k-means' centroids (`pseudo_labels.centroids`).
    """
    if encoder.head_params is not None and not own_labels:
        log.info(
            "pretrain: fresh pre-training head; the checkpoint's head scores its own k-means "
            "clusters, not these pseudo-labels (give their centroids with "
            "--config.pseudo_labels.centroids to reuse it)"
        )
        head_cfg, head_params = pretrain.choose_head(None, None, num_clusters, final_dim)
        return head_cfg, head_params, "fresh (pseudo-labels are not the checkpoint's own)"
    head_cfg, head_params = pretrain.choose_head(
        encoder.head_config, encoder.head_params, num_clusters, final_dim
    )
    return head_cfg, head_params, "checkpoint's own" if head_params is not None else "fresh"


def _pretrain(
    ws: Workspace,
    out: Path,
    encoder,
    fusion: str,
    labels_dir: Path,
    t,
    own_labels: bool,
    description: str,
    recipe_dropout: bool = True,
) -> dict[str, Any] | None:
    """One masked-prediction run into `out`; None when stopped before the end.

    With `recipe_dropout`, the encoder's dropout rates are the config's (`t.*_dropout`,
    the HuBERT recipe), not whatever the source checkpoint's config says.
    """
    targets = pseudo_labels_lib.load_pseudo_labels(str(labels_dir))
    num_clusters = int(np.load(labels_dir / pseudo_labels_lib.CENTROIDS_FILE).shape[0])
    enc_cfg, enc_params = with_speakers(encoder, fusion, ws.num_speakers(), ws.config)
    if recipe_dropout:
        enc_cfg = enc_cfg.replace(**{k: float(t[k]) for k in DROPOUT_KEYS})
    head_cfg, head_params, head_source = _head(encoder, num_clusters, int(t.final_dim), own_labels)
    run = pretrain.PretrainRun(
        encoder_config=enc_cfg,
        encoder_params=enc_params,
        head_config=head_cfg,
        head_params=head_params,
        loss=pretrain.PretrainLossConfig(
            mask_prob=float(t.mask_prob),
            mask_length=int(t.mask_length),
            features_pen_weight=float(t.features_pen_weight),
        ),
        epochs=int(t.epochs),
        peak_lr=float(t.peak_lr),
        warmup_fraction=float(t.warmup_fraction),
        adam_b1=float(t.adam_b1),
        adam_b2=float(t.adam_b2),
        adam_eps=float(t.adam_eps),
        weight_decay=float(t.weight_decay),
        clip_norm=float(t.clip_norm),
        log_every=int(ws.config.log_every),
        stop_after_steps=int(t.stop_after_steps),
        seed=int(ws.config.seed),
    )
    train_data = ws.train_data(ws.config.pretrain.train_splits, targets)
    eval_batches, _ = ws.eval_batches(ws.config.pretrain.eval_split, targets)
    result, best = pretrain.run_pretraining(
        run, train_data, eval_batches, ws.mesh, str(out), description=description
    )
    if not result.finished:
        log.info("pretrain stopped at step %d (stop_after_steps); run again to resume", result.step)
        return None
    from papt_jax.convert import ConvertedCheckpoint, save_converted

    with atomic_dir(out / "encoder") as tmp:
        save_converted(
            ConvertedCheckpoint(
                enc_cfg.replace(dtype="float32", remat=False),
                best["hubert"],
                head_cfg,
                best["head"],
                "papt_jax",
            ),
            tmp,
            overwrite=True,
        )
    return {"steps": result.step, "best_loss": result.best, "head": head_source}


def bootstrap_needed(config: ml_collections.ConfigDict) -> bool:
    return "bootstrap" in (config.model.init, config.pseudo_labels.teacher)


def run_bootstrap(ws: Workspace) -> dict[str, Any] | None:
    """HuBERT iteration 1 in miniature: MFCC k-means labels, a small encoder from scratch."""
    if not bootstrap_needed(ws.config):
        log.info("bootstrap: not needed (model.init=%s)", ws.config.model.init)
        return {"needed": False}
    b = ws.config.bootstrap
    out = ws.stage_dir("bootstrap")
    labels_dir = out / "pseudo_labels"
    if not labels_dir.is_dir():  # renamed into place only once complete
        _compute_labels(ws, labels_dir, "mfcc", "", 0, int(b.num_clusters))
    encoder = random_encoder(get_preset(b.preset), int(ws.config.seed))
    t = ml_collections.ConfigDict(dict(ws.config.pretrain))
    t.update(
        epochs=b.epochs,
        peak_lr=b.peak_lr,
        mask_prob=b.mask_prob,
        features_pen_weight=b.features_pen_weight,
        stop_after_steps=0,
    )
    return _pretrain(
        ws,
        out,
        encoder,
        "none",
        labels_dir,
        t,
        own_labels=False,
        description="bootstrap",
        recipe_dropout=False,  # a from-scratch miniature keeps its preset's dropout
    )


def run_pseudo_labels(ws: Workspace) -> dict[str, Any]:
    p = ws.config.pseudo_labels
    _compute_labels(
        ws, ws.path("pseudo_labels"), p.source, p.teacher, int(p.layer), int(p.num_clusters)
    )
    return {"num_clusters": int(p.num_clusters), "source": p.source}


def run_pretrain(ws: Workspace) -> dict[str, Any] | None:
    encoder = ws.load_encoder(ws.config.model.init)
    return _pretrain(
        ws,
        ws.stage_dir("pretrain"),
        encoder,
        ws.config.pretrain.speaker_fusion,
        ws.path("pseudo_labels"),
        ws.config.pretrain,
        own_labels=bool(ws.config.pseudo_labels.centroids),
        description="PAPT" if ws.config.pretrain.speaker_fusion != "none" else "TAPT",
    )


# --- B2 speaker weights ------------------------------------------------------------------


def _compare_features(ws: Workspace, split: str, out: Path) -> dict[str, np.ndarray]:
    """ComParE functionals of every utterance of `split`, cached in `out` (an .npz)."""
    from papt_jax import b2

    if out.is_file():
        with np.load(out) as z:
            return {k: z[k] for k in z.files}
    batches, total = ws.eval_batches(split)
    keys, speakers, rows = [], [], []
    for batch in tqdm.tqdm(batches(), total=total, desc=f"B2 ComParE {split}", unit="batch"):
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


# --- fine-tuning ---------------------------------------------------------------------------


def _finetune_encoder(ws: Workspace):
    if ws.config.finetune.init == "pretrain":
        encoder = ws.load_encoder("pretrain")
        return with_speakers(
            encoder, encoder.config.speaker_fusion, encoder.config.num_speakers, ws.config
        )
    return with_speakers(ws.load_encoder(ws.config.model.init), "none", 0, ws.config)


def _finetune_run(ws: Workspace, dimension: str) -> finetune.FinetuneRun:
    f = ws.config.finetune
    enc_cfg, enc_params = _finetune_encoder(ws)
    return finetune.FinetuneRun(
        encoder_config=enc_cfg,
        encoder_params=enc_params,
        dimension=dimension,
        epochs=int(f.epochs),
        peak_lr=float(f.peak_lr),
        schedule=f.schedule,
        warmup_fraction=float(f.warmup_fraction),
        clip_norm=float(f.clip_norm),
        patience=int(f.patience),
        freeze_feature_extractor=bool(f.freeze_feature_extractor),
        label_scaling=f.label_scaling,
        head_dropout=float(f.head_dropout),
        log_every=int(ws.config.log_every),
        stop_after_steps=int(f.stop_after_steps),
        seed=int(ws.config.seed),
        speaker_weights=speaker_weights_of(ws),
    )


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


def run_finetune(ws: Workspace) -> dict[str, Any] | None:
    facts = {}
    for dimension in csv(ws.config.finetune.dimensions):
        out = ws.stage_dir("finetune", dimension)
        done = out / "model" / "encoder_config.json"
        if done.is_file():
            log.info("finetune[%s]: done earlier", dimension)
            facts[dimension] = json.loads((out / "result.json").read_text())
            continue
        run = _finetune_run(ws, dimension)
        splits, speakers = finetune_speakers(ws)
        train_data = ws.train_data(splits, seed_offset=1, speakers=speakers)
        eval_batches, _ = ws.eval_batches("validation")
        result, best = finetune.run_finetuning(run, train_data, eval_batches, ws.mesh, str(out))
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
            (tmp / "encoder_config.json").write_text(run.encoder_config.to_json())
    return facts


def load_finetuned(ws: Workspace, dimension: str):
    """(model settings, variables) of the fine-tuned model for `dimension`."""
    out = ws.path("finetune", dimension, "model")
    cfg = HubertConfig.from_dict(json.loads((out / "encoder_config.json").read_text()))
    run = finetune.FinetuneRun(
        encoder_config=cfg,
        encoder_params={},
        dimension=dimension,
        label_scaling=ws.config.finetune.label_scaling,
    )
    return run, checkpoint.restore_tree(out / "variables")


# --- evaluation and report -------------------------------------------------------------------


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
            "train": evaluate_lib.encode_pooled(encode, enc_params, train_batches(), ws.mesh),
            "test_c": evaluate_lib.encode_pooled(encode, enc_params, test_c_batches(), ws.mesh),
        }
    written = []
    with atomic_dir(ws.path("evaluate")) as tmp:
        (tmp / "passes").mkdir()
        if original is not None:
            evaluate_lib.save_passes(original, tmp / "passes" / "original_encoder.npz")
        for dimension in csv(ws.config.finetune.dimensions):
            run, variables = load_finetuned(ws, dimension)
            scaling = finetune.LabelScaling(run.label_scaling)
            predict_step = finetune.make_predict_step(run.model(), scaling, ws.mesh)
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
            # Pooled representations and predictions of every pass, for the shift analysis
            # and for prediction on new audio (PLDC's reference speakers).
            evaluate_lib.save_passes(passes, tmp / "passes" / f"{dimension}.npz")
            for result in results:
                save_result(result, tmp / f"{result.stem}.npz")
                written.append(f"{result.stem}.npz")
    return {"results": written, "pldc_k": k}


def run_report(ws: Workspace) -> dict[str, Any]:
    paths = sorted(ws.path("evaluate").glob("*.npz"))
    results = [load_result(p) for p in paths]
    record = ws.record("evaluate") or {}
    k = (record.get("facts") or {}).get("pldc_k")
    run = {"PLDC k": k, "evaluation fingerprint": record.get("fingerprint")}
    # The saved passes feed the retrieval diagnostic and the speaker-shift analysis.
    references = report_lib.load_references(ws.path("evaluate", "passes"), results, k)
    with atomic_dir(ws.path("report")) as tmp:
        report_lib.write_report(results, tmp, ws.config.name, run=run, references=references)
    return {"results_md": str(ws.path("report", "results.md"))}


# --- the stage table ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
      name: the stage's name (as in `--config.stages`).
      run: the stage function.
      needs: config -> the stages whose outputs it reads.
      keys: config -> the config keys (or key prefixes ending in '.') that decide its outputs.
      outputs: workspace -> the paths it writes (removed when it must be redone).
      resumable: a started, unfinished attempt continues from its checkpoints.
    """

    name: str
    run: Callable[[Workspace], dict[str, Any] | None]
    needs: Callable[[ml_collections.ConfigDict], tuple[str, ...]]
    keys: Callable[[ml_collections.ConfigDict], tuple[str, ...]]
    outputs: Callable[[Workspace], tuple[Path, ...]]
    resumable: bool = False


_TRAIN_DATA_KEYS = ("seed", "data.max_seconds", "data.num_buckets", "data.batch_seconds")
_TRAIN_DATA_KEYS += ("data.batch_size", "model.dtype")


def _corpus_keys(c) -> tuple[str, ...]:
    return ("data.synthetic_preset", "data.corpus_dir") + (
        ("seed",) if c.data.synthetic_preset else ()
    )


def _prepare_keys(c) -> tuple[str, ...]:
    return tuple(
        f"data.{k}"
        for k in (
            "labels_file",
            "new_labels_file",
            "new_corpus_dir",
            "train_splits",
            "validation_splits",
            "test_splits",
            "new_test_splits",
            "test_a_seconds",
            "on_bad_rows",
            "on_bad_audio",
            "resample",
            "data_dir",
        )
    )


def _bootstrap_keys(c) -> tuple[str, ...]:
    if not bootstrap_needed(c):
        return ("model.init", "pseudo_labels.teacher")
    # The bootstrap reads the pre-training settings except these (its own, or fixed).
    overridden = {"epochs", "peak_lr", "mask_prob", "features_pen_weight", "speaker_fusion"}
    overridden |= set(DROPOUT_KEYS)
    shared = tuple(f"pretrain.{k}" for k in c.pretrain if k not in overridden)
    return ("bootstrap.", "model.init", "pseudo_labels.teacher") + shared + _TRAIN_DATA_KEYS


def _pseudo_label_keys(c) -> tuple[str, ...]:
    keys = ("pseudo_labels.", "pretrain.train_splits", "pretrain.eval_split", "seed")
    return keys + ("model.dtype",)


def _pretrain_keys(c) -> tuple[str, ...]:
    return ("pretrain.", "model.init", "pseudo_labels.centroids") + _TRAIN_DATA_KEYS


def _speaker_weight_keys(c) -> tuple[str, ...]:
    if c.finetune.speaker_weighting != "b2":
        return ("finetune.speaker_weighting",)
    return ("finetune.speaker_weighting", "b2.", "seed")


def _finetune_keys(c) -> tuple[str, ...]:
    keys = ("finetune.",) + _TRAIN_DATA_KEYS
    return keys + (("model.init",) if c.finetune.init == "model" else ())


def _evaluate_keys(c) -> tuple[str, ...]:
    keys = ("evaluate.", "finetune.dimensions", "finetune.label_scaling", "model.dtype")
    return keys + (("model.init",) if "test_c" in csv(c.evaluate.splits) else ())


def _data_outputs(ws: Workspace) -> tuple[Path, ...]:
    # A dataset outside the workdir may be shared by other runs: never removed from here
    # (prepare refuses to reuse one built with other options).
    inside = ws.workdir in ws.data_dir.parents
    return (ws.data_dir,) if inside else ()


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("corpus", run_corpus, lambda c: (), _corpus_keys, lambda ws: (ws.path("corpus"),)),
        Stage("prepare", run_prepare, lambda c: ("corpus",), _prepare_keys, _data_outputs),
        Stage(
            "bootstrap",
            run_bootstrap,
            lambda c: ("prepare",),
            _bootstrap_keys,
            lambda ws: (ws.path("bootstrap"),),
            resumable=True,
        ),
        Stage(
            "pseudo_labels",
            run_pseudo_labels,
            lambda c: ("prepare", "bootstrap"),
            _pseudo_label_keys,
            lambda ws: (ws.path("pseudo_labels"),),
        ),
        Stage(
            "pretrain",
            run_pretrain,
            lambda c: ("prepare", "bootstrap", "pseudo_labels"),
            _pretrain_keys,
            lambda ws: (ws.path("pretrain"),),
            resumable=True,
        ),
        Stage(
            "speaker_weights",
            run_speaker_weights,
            lambda c: ("prepare",),
            _speaker_weight_keys,
            lambda ws: (ws.path("speaker_weights"),),
            # Its ComParE feature cache is kept and reused when an attempt is resumed.
            resumable=True,
        ),
        Stage(
            "finetune",
            run_finetune,
            lambda c: (
                ("prepare", "bootstrap", "speaker_weights")
                + (("pretrain",) if c.finetune.init == "pretrain" else ())
            ),
            _finetune_keys,
            lambda ws: (ws.path("finetune"),),
            resumable=True,
        ),
        Stage(
            "evaluate",
            run_evaluate,
            lambda c: ("prepare", "bootstrap", "finetune"),
            _evaluate_keys,
            lambda ws: (ws.path("evaluate"),),
        ),
        Stage(
            "report",
            run_report,
            lambda c: ("evaluate",),
            lambda c: ("name",),
            lambda ws: (ws.path("report"),),
        ),
    )
}
assert tuple(STAGES) == settings.STAGES
