"""The experiment pipeline: configured stages, in order, inside one workdir.

Every stage writes into `<workdir>/<stage>/` and ends by writing a `DONE` marker;
a stage whose marker exists is skipped, so a killed run picks up where it stopped
(training stages also resume mid-way from their latest checkpoint).

  corpus -> prepare -> bootstrap -> pseudo_labels -> pretrain -> finetune -> evaluate -> report
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from papt_jax import evaluate as evaluate_lib
from papt_jax import pseudo_labels as pseudo_labels_lib
from papt_jax import report as report_lib
from papt_jax.config_defaults import ALL_STAGES
from papt_jax.data import pipeline as data_pipeline
from papt_jax.models.config import HubertConfig, get_preset
from papt_jax.models.hubert import HubertModel
from papt_jax.train import finetune, pretrain
from papt_jax.train.sharding import make_mesh

log = logging.getLogger(__name__)

DONE = "DONE"
DIMENSIONS = ("arousal", "valence")


class ConfigError(ValueError):
    """The configuration cannot run: says what to provide."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def parse_stages(value: str) -> tuple[str, ...]:
    stages = _csv(value)
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise ConfigError(f"unknown stages {unknown}; choose from {list(ALL_STAGES)}")
    return stages


def check_config(config: ml_collections.ConfigDict, stages: tuple[str, ...]) -> None:
    """Fails at once, listing everything missing, before any work starts."""
    problems = []
    embedded = bool(config.data.synthetic_preset)
    if not embedded:
        if not config.data.corpus_dir:
            problems.append(
                "set --config.data.corpus_dir=/path/to/MSP-Podcast (with Audios/ and Labels/), "
                "or use an embedded-corpus variant such as configs/papt.py:demo"
            )
        elif not os.path.isdir(config.data.corpus_dir):
            problems.append(f"data.corpus_dir {config.data.corpus_dir!r} is not a directory")
    needs_model = {"bootstrap", "pretrain", "finetune", "evaluate"} & set(stages)
    if needs_model:
        problems.extend(_check_init_spec("model.init", config.model.init))
    if "pseudo_labels" in stages and config.pseudo_labels.source == "teacher":
        problems.extend(_check_init_spec("pseudo_labels.teacher", config.pseudo_labels.teacher))
    if config.pseudo_labels.source not in ("teacher", "mfcc"):
        problems.append("pseudo_labels.source must be 'teacher' or 'mfcc'")
    if config.finetune.init not in ("pretrain", "model"):
        problems.append("finetune.init must be 'pretrain' or 'model'")
    for dim in _csv(config.finetune.dimensions):
        if dim not in DIMENSIONS:
            problems.append(f"finetune.dimensions: unknown dimension {dim!r}")
    if problems:
        raise ConfigError("cannot run this configuration:\n  - " + "\n  - ".join(problems))


def _check_init_spec(name: str, spec: str) -> list[str]:
    if not spec:
        return [
            f"set --config.{name}=converted:DIR (from `python -m papt_jax.convert`), "
            "pytorch:PATH (Hugging Face dir or fairseq .pt) or preset:NAME (random init)"
        ]
    if spec in ("bootstrap", "pretrain"):
        return []
    kind, _, value = spec.partition(":")
    if kind in ("converted", "pytorch"):
        return [] if os.path.exists(value) else [f"{name}: {value!r} does not exist"]
    if kind == "preset":
        return (
            [] if value in ("base", "large", "small", "tiny") else [f"{name}: no preset {value!r}"]
        )
    return [f"{name}: cannot read {spec!r}; use converted:DIR, pytorch:PATH or preset:NAME"]


class Workspace:
    """Paths and shared state of one run."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = Path(workdir).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mesh = make_mesh(config.num_devices or None)
        self._eval_buckets: tuple[int, ...] | None = None

    # --- paths and markers ---------------------------------------------------------
    @property
    def corpus_dir(self) -> Path:
        if self.config.data.synthetic_preset:
            return self.workdir / "corpus"
        return Path(self.config.data.corpus_dir)

    @property
    def data_dir(self) -> Path:
        return (
            Path(self.config.data.data_dir) if self.config.data.data_dir else self.workdir / "data"
        )

    def stage_dir(self, *parts: str) -> Path:
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_done(self, *parts: str) -> bool:
        return (self.workdir.joinpath(*parts) / DONE).is_file()

    def mark_done(self, *parts: str, info: dict | None = None) -> None:
        (self.stage_dir(*parts) / DONE).write_text(json.dumps(info or {}, indent=1, default=str))

    # --- data ---------------------------------------------------------------------
    def num_speakers(self) -> int:
        from papt_jax.data import msp_podcast, prepare

        return len(msp_podcast.read_speakers(prepare.dataset_dir(self.data_dir) / "speakers.json"))

    def has_split(self, split: str) -> bool:
        from papt_jax.data import prepare

        return (prepare.dataset_dir(self.data_dir) / "index" / f"{split}.json").is_file()

    def _batch_options(self) -> dict[str, Any]:
        d = self.config.data
        if d.batch_seconds:
            return {"batch_size": None, "batch_seconds": float(d.batch_seconds)}
        return {"batch_size": int(d.batch_size)}

    def train_data(self, splits: str, targets=None, seed_offset: int = 0):
        """Shuffled, cropped, bucketed training batches over one or more splits."""
        d = self.config.data
        cfg = data_pipeline.PipelineConfig(
            mode="train",
            num_buckets=int(d.num_buckets),
            max_length=int(d.max_seconds * 16_000),
            seed=int(self.config.seed) + seed_offset,
            worker_count=int(d.worker_count),
            device_count=self.mesh.size,
            **self._batch_options(),
        )
        return data_pipeline.make_pipeline(self.data_dir, _csv(splits), cfg, targets)

    def eval_batches(self, splits: str, targets=None):
        """A callable giving one fresh, ordered, uncropped pass over `splits`."""
        cfg = data_pipeline.PipelineConfig(
            mode="eval",
            bucket_lengths=self.eval_bucket_lengths(),
            batch_size=int(self.config.data.eval_batch_size),
            device_count=self.mesh.size,
            worker_count=int(self.config.data.worker_count),
        )
        pipe = data_pipeline.make_pipeline(self.data_dir, _csv(splits), cfg, targets)
        return lambda: iter(pipe), pipe.batches_per_epoch

    def eval_bucket_lengths(self) -> tuple[int, ...]:
        """One bucket set for every evaluation pass, fitted on all splits, so no
        utterance is cropped and evaluation compiles the same few shapes everywhere."""
        if self._eval_buckets is None:
            splits = [
                s
                for s in ("train", "validation", "test_a", "test_b", "test_c")
                if self.has_split(s)
            ]
            lengths = np.concatenate(
                [data_pipeline.load_index(self.data_dir, s).num_samples for s in splits]
            )
            self._eval_buckets = data_pipeline.fit_bucket_lengths(
                lengths, int(self.config.data.num_buckets)
            )
        return self._eval_buckets

    # --- encoders -----------------------------------------------------------------
    def load_encoder(self, spec: str):
        """A `ConvertedCheckpoint` for an init spec (see `check_config`)."""
        from papt_jax import convert

        if spec in ("bootstrap", "pretrain"):
            return convert.load_converted(self.workdir / spec / "encoder")
        kind, _, value = spec.partition(":")
        if kind == "converted":
            return convert.load_converted(value)
        if kind == "pytorch":
            return convert.load_pytorch_checkpoint(
                value, allow_unsafe_pickle=bool(self.config.model.allow_unsafe_pickle)
            )
        if kind == "preset":
            return _random_encoder(get_preset(value), int(self.config.seed))
        raise ConfigError(f"cannot read encoder spec {spec!r}")


def _random_encoder(config: HubertConfig, seed: int):
    from papt_jax.convert import ConvertedCheckpoint

    model = HubertModel(config)
    audio = jax.numpy.zeros((1, 16_000))
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), audio)["params"]
    return ConvertedCheckpoint(config, jax.device_get(params), None, None, "random_init")


def _with_speakers(encoder, fusion: str, num_speakers: int, config: ml_collections.ConfigDict):
    """Encoder config/params with the run's compute options and a zero speaker table."""
    cfg = encoder.config.replace(
        dtype=config.model.dtype,
        remat=bool(config.model.remat),
        speaker_fusion=fusion,
        num_speakers=num_speakers if fusion != "none" else 0,
    )
    params = dict(encoder.params)
    params.pop("speaker_embedding", None)
    if fusion != "none":
        if encoder.config.num_speakers == num_speakers and "speaker_embedding" in encoder.params:
            params["speaker_embedding"] = encoder.params["speaker_embedding"]
        else:
            params["speaker_embedding"] = {
                "embedding": np.zeros((num_speakers, cfg.hidden_size), np.float32)
            }
    return cfg, params


# --- stages -----------------------------------------------------------------------------


def stage_corpus(ws: Workspace) -> None:
    preset = ws.config.data.synthetic_preset
    if not preset:
        log.info("corpus: using %s", ws.corpus_dir)
        return
    from papt_jax.data import synthetic

    if ws.corpus_dir.exists() and any(ws.corpus_dir.iterdir()):
        log.info("corpus: %s exists (partial generation is regenerated)", ws.corpus_dir)
    synthetic.generate_corpus(
        ws.corpus_dir, preset=preset, seed=int(ws.config.seed), overwrite=True
    )


def stage_prepare(ws: Workspace) -> None:
    from papt_jax.data import msp_podcast, prepare

    d = ws.config.data
    splits = dict(msp_podcast.DEFAULT_SPLITS)
    splits.update(
        train=_csv(d.train_splits), validation=_csv(d.validation_splits), test=_csv(d.test_splits)
    )
    corpus_cfg = msp_podcast.CorpusConfig(
        corpus_dir=ws.corpus_dir,
        labels_file=Path(d.labels_file) if d.labels_file else None,
        new_labels_file=Path(d.new_labels_file) if d.new_labels_file else None,
        splits=splits,
        test_c_splits=_csv(d.new_test_splits),
        test_a_seconds=float(d.test_a_seconds),
        on_bad_rows=d.on_bad_rows,
        on_bad_audio=d.on_bad_audio,
        resample=bool(d.resample),
    )
    prepare.prepare(corpus_cfg, ws.data_dir)


def _compute_labels(
    ws: Workspace, out_dir: Path, source: str, teacher_spec: str, layer: int, num_clusters: int
) -> None:
    p = ws.config.pseudo_labels
    if source == "mfcc":
        feature_fn, rate = pseudo_labels_lib.mfcc_feature_fn()
    else:
        teacher = ws.load_encoder(teacher_spec)
        cfg, params = _with_speakers(teacher, "none", 0, ws.config)
        feature_fn, rate = pseudo_labels_lib.teacher_feature_fn(HubertModel(cfg), params, layer)
    batches, n = ws.eval_batches(
        ws.config.pretrain.train_splits + "," + ws.config.pretrain.eval_split
    )
    pseudo_labels_lib.compute_pseudo_labels(
        batches,
        feature_fn,
        rate,
        pseudo_labels_lib.PseudoLabelConfig(
            num_clusters=num_clusters,
            fit_fraction=float(p.fit_fraction),
            batch_size=int(p.kmeans_batch_size),
            max_iter=int(p.kmeans_max_iter),
            seed=int(ws.config.seed),
            centroids_path=p.centroids if source == p.source else "",
        ),
        str(out_dir),
        total_batches=n,
    )


def _pretrain(ws: Workspace, out: Path, encoder, fusion: str, labels_dir: Path, t) -> bool:
    """One masked-prediction run into `out`; returns False when stopped before the end."""
    targets = pseudo_labels_lib.load_pseudo_labels(str(labels_dir))
    num_clusters = int(np.load(labels_dir / pseudo_labels_lib.CENTROIDS_FILE).shape[0])
    enc_cfg, enc_params = _with_speakers(encoder, fusion, ws.num_speakers(), ws.config)
    head_cfg, head_params = pretrain.choose_head(
        encoder.head_config, encoder.head_params, num_clusters, int(t.final_dim)
    )
    run = pretrain.PretrainRun(
        encoder_config=enc_cfg,
        encoder_params=enc_params,
        head_config=head_cfg,
        head_params=head_params,
        loss=pretrain.PretrainLossConfig(
            mask_prob=float(t.mask_prob),
            mask_length=int(t.get("mask_length", 10)),
            features_pen_weight=float(t.features_pen_weight),
        ),
        epochs=int(t.epochs),
        peak_lr=float(t.peak_lr),
        warmup_fraction=float(t.get("warmup_fraction", 0.05)),
        weight_decay=float(t.get("weight_decay", 0.0)),
        clip_norm=float(t.get("clip_norm", 10.0)),
        log_every=int(ws.config.log_every),
        stop_after_steps=int(t.get("stop_after_steps", 0)),
        seed=int(ws.config.seed),
    )
    train_data = ws.train_data(ws.config.pretrain.train_splits, targets)
    eval_batches, _ = ws.eval_batches(ws.config.pretrain.eval_split, targets)
    result, best = pretrain.run_pretraining(run, train_data, eval_batches, ws.mesh, str(out))
    if not result.finished:
        log.info("pretrain stopped at step %d (stop_after_steps); run again to resume", result.step)
        return False
    from papt_jax.convert import ConvertedCheckpoint, save_converted

    save_converted(
        ConvertedCheckpoint(
            enc_cfg.replace(dtype="float32", remat=False),
            best["hubert"],
            head_cfg,
            best["head"],
            "papt_jax",
        ),
        out / "encoder",
        overwrite=True,
    )
    return True


def stage_bootstrap(ws: Workspace) -> bool:
    """HuBERT iteration 1 in miniature: MFCC k-means labels, a small encoder from scratch."""
    if ws.config.model.init != "bootstrap" and ws.config.pseudo_labels.teacher != "bootstrap":
        log.info("bootstrap: not needed (model.init=%s)", ws.config.model.init)
        return True
    b = ws.config.bootstrap
    out = ws.stage_dir("bootstrap")
    labels_dir = out / "pseudo_labels"
    if not (labels_dir / pseudo_labels_lib.LABELS_FILE).is_file():
        _compute_labels(ws, labels_dir, "mfcc", "", 0, int(b.num_clusters))
    encoder = _random_encoder(get_preset(b.preset), int(ws.config.seed))
    t = ml_collections.ConfigDict(dict(ws.config.pretrain))
    t.update(
        epochs=b.epochs,
        peak_lr=b.peak_lr,
        mask_prob=b.mask_prob,
        features_pen_weight=b.features_pen_weight,
        stop_after_steps=0,
    )
    return _pretrain(ws, out, encoder, "none", labels_dir, t)


def stage_pseudo_labels(ws: Workspace) -> bool:
    p = ws.config.pseudo_labels
    _compute_labels(
        ws, ws.stage_dir("pseudo_labels"), p.source, p.teacher, int(p.layer), int(p.num_clusters)
    )
    return True


def stage_pretrain(ws: Workspace) -> bool:
    encoder = ws.load_encoder(ws.config.model.init)
    return _pretrain(
        ws,
        ws.stage_dir("pretrain"),
        encoder,
        ws.config.pretrain.speaker_fusion,
        ws.workdir / "pseudo_labels",
        ws.config.pretrain,
    )


def _finetune_encoder(ws: Workspace):
    f = ws.config.finetune
    if f.init == "pretrain":
        encoder = ws.load_encoder("pretrain")
        return _with_speakers(
            encoder, encoder.config.speaker_fusion, encoder.config.num_speakers, ws.config
        )
    return _with_speakers(ws.load_encoder(ws.config.model.init), "none", 0, ws.config)


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
    )


def stage_finetune(ws: Workspace) -> bool:
    for dimension in _csv(ws.config.finetune.dimensions):
        if ws.is_done("finetune", dimension):
            log.info("finetune[%s]: done", dimension)
            continue
        out = ws.stage_dir("finetune", dimension)
        run = _finetune_run(ws, dimension)
        train_data = ws.train_data("train", seed_offset=1)
        eval_batches, _ = ws.eval_batches("validation")
        result, best = finetune.run_finetuning(run, train_data, eval_batches, ws.mesh, str(out))
        if not result.finished:
            log.info("finetune[%s] stopped at step %d; run again to resume", dimension, result.step)
            return False
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(out / "best_variables", best, force=True)
        ckptr.wait_until_finished()
        (out / "encoder_config.json").write_text(run.encoder_config.to_json())
        ws.mark_done("finetune", dimension, info={"best_ccc": result.best, "steps": result.step})
    return True


def _load_finetuned(ws: Workspace, dimension: str):
    out = ws.workdir / "finetune" / dimension
    cfg = HubertConfig.from_dict(json.loads((out / "encoder_config.json").read_text()))
    run = finetune.FinetuneRun(
        encoder_config=cfg,
        encoder_params={},
        dimension=dimension,
        label_scaling=ws.config.finetune.label_scaling,
    )
    variables = ocp.StandardCheckpointer().restore(out / "best_variables")
    return run, variables


def stage_evaluate(ws: Workspace) -> bool:
    out = ws.stage_dir("evaluate")
    k = int(ws.config.evaluate.pldc_k)
    splits = [s for s in _csv(ws.config.evaluate.splits) if ws.has_split(s)]
    skipped = set(_csv(ws.config.evaluate.splits)) - set(splits)
    if skipped:
        log.warning("evaluate: splits %s were not built (no new-release labels?)", sorted(skipped))
    train_batches, _ = ws.eval_batches("train")
    original = None
    if "test_c" in splits:
        # Speaker retrieval for unseen speakers uses the encoder before adaptation.
        enc_cfg, enc_params = _with_speakers(
            ws.load_encoder(ws.config.model.init), "none", 0, ws.config
        )
        encode = evaluate_lib.make_encode_step(HubertModel(enc_cfg), ws.mesh)
        test_c_batches, _ = ws.eval_batches("test_c")
        original = {
            "train": evaluate_lib.encode_pooled(encode, enc_params, train_batches(), ws.mesh),
            "test_c": evaluate_lib.encode_pooled(encode, enc_params, test_c_batches(), ws.mesh),
        }
    for dimension in _csv(ws.config.finetune.dimensions):
        run, variables = _load_finetuned(ws, dimension)
        scaling = finetune.LabelScaling(run.label_scaling)
        predict_step = finetune.make_predict_step(run.model(), scaling, ws.mesh)
        train = finetune.predict(predict_step, variables, train_batches(), ws.mesh)
        for split in splits:
            batches, _ = ws.eval_batches(split)
            name = split.replace("_", "-")
            if split == "test_c":
                result = evaluate_lib.evaluate_unseen(
                    predict_step,
                    variables,
                    dimension,
                    train,
                    original["train"],
                    original["test_c"],
                    batches(),
                    ws.mesh,
                    k,
                    split=name,
                )
            else:
                result = evaluate_lib.evaluate_seen(
                    predict_step, variables, dimension, train, batches(), ws.mesh, k, split=name
                )
            save_result(result, out / f"{result.stem}.npz")
    return True


def save_result(result: report_lib.EvalResult, path: Path) -> None:
    np.savez(
        path,
        dimension=result.dimension,
        split=result.split,
        keys=result.keys.astype(str),
        speakers=result.speakers.astype(str),
        labels=result.labels,
        predictions=result.predictions,
        **{f"calibrated_{m}": v for m, v in result.calibrated.items()},
    )


def load_result(path: Path) -> report_lib.EvalResult:
    with np.load(path, allow_pickle=False) as z:
        calibrated = {k[len("calibrated_") :]: z[k] for k in z.files if k.startswith("calibrated_")}
        return report_lib.EvalResult(
            str(z["dimension"]),
            str(z["split"]),
            z["keys"],
            z["speakers"],
            z["labels"],
            z["predictions"],
            calibrated,
        )


def stage_report(ws: Workspace) -> bool:
    paths = sorted((ws.workdir / "evaluate").glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no evaluation results in {ws.workdir / 'evaluate'}")
    results = [load_result(p) for p in paths]
    written = report_lib.write_report(results, ws.stage_dir("report"), ws.config.name)
    print(Path(written["results_md"]).read_text())
    return True


STAGES = {
    "corpus": stage_corpus,
    "prepare": stage_prepare,
    "bootstrap": stage_bootstrap,
    "pseudo_labels": stage_pseudo_labels,
    "pretrain": stage_pretrain,
    "finetune": stage_finetune,
    "evaluate": stage_evaluate,
    "report": stage_report,
}


def prerequisites(config: ml_collections.ConfigDict, stage: str) -> tuple[str, ...]:
    """Stages whose outputs `stage` reads (given this config)."""
    needs = {
        "corpus": (),
        "prepare": ("corpus",),
        "bootstrap": ("prepare",),
        "pseudo_labels": ("prepare", "bootstrap"),
        "pretrain": ("prepare", "bootstrap", "pseudo_labels"),
        "finetune": ("prepare", "bootstrap")
        + (("pretrain",) if config.finetune.init == "pretrain" else ()),
        "evaluate": ("prepare", "bootstrap", "finetune"),
        "report": ("evaluate",),
    }
    return needs[stage]


def plan_stages(config: ml_collections.ConfigDict, ws: Workspace) -> tuple[str, ...]:
    """The requested stages plus every incomplete prerequisite, in pipeline order.

    So `--config.stages=pseudo_labels,pretrain` works on a fresh workdir: the corpus
    and dataset stages run first (and are skipped later once done).
    """
    wanted = set(parse_stages(config.stages))
    pending = list(wanted)
    while pending:
        for need in prerequisites(config, pending.pop()):
            if need not in wanted and not ws.is_done(need):
                log.info("stage %s is needed first (not complete yet)", need)
                wanted.add(need)
                pending.append(need)
    return tuple(s for s in ALL_STAGES if s in wanted)


def run(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Runs the configured stages; returns False when a stage stopped early (resumable)."""
    check_config(config, parse_stages(config.stages))
    ws = Workspace(config, workdir)
    stages = plan_stages(config, ws)
    check_config(config, stages)
    (ws.workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
    log.info("workdir %s, %d device(s), stages %s", ws.workdir, ws.mesh.size, ",".join(stages))
    for name in stages:
        if ws.is_done(name):
            log.info("stage %s: already complete, skipped", name)
            continue
        log.info("stage %s: starting", name)
        complete = STAGES[name](ws)
        if complete is False:
            return False
        ws.mark_done(name)
    return True
