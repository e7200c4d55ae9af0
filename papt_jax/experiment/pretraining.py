"""Pre-training stages: the embedded corpus's bootstrap, pseudo-labels, PAPT / TAPT, each
with the encoder family's own objective (`objectives`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from papt_jax import pseudo_label_files
from papt_jax import pseudo_labels as pseudo_labels_lib
from papt_jax.contrastive import FAIRSEQ_WAV2VEC2_LARGE
from papt_jax.experiment import objectives, settings
from papt_jax.experiment.workspace import (
    Workspace,
    atomic_dir,
    random_encoder,
    remove,
    with_speakers,
)
from papt_jax.models.config import get_preset
from papt_jax.models.hubert import HubertModel
from papt_jax.train import pretrain

log = logging.getLogger(__name__)

csv = settings.csv


# The encoder's dropout rates that pre-training sets from the config (the HuBERT recipe).
DROPOUT_KEYS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout")


def _compute_labels(
    ws: Workspace,
    out_dir: Path,
    source: str,
    teacher_spec: str,
    layer: int,
    num_clusters: int,
    splits: str,
    name: str,
) -> None:
    """Clusters frame features of `splits` (comma-separated) into `out_dir` (atomically);
    `name` labels its progress bars and log lines."""
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
    batches, n = ws.eval_batches(splits)
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
            name=name,
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
        # Not `choose_head`: it would add that the checkpoint has no head at all.
        head_cfg, head_params = pretrain.fresh_head(num_clusters, final_dim)
        return head_cfg, head_params, "fresh (pseudo-labels are not the checkpoint's own)"
    head_cfg, head_params = pretrain.choose_head(
        encoder.head_config, encoder.head_params, num_clusters, final_dim
    )
    return head_cfg, head_params, "checkpoint's own" if head_params is not None else "fresh"


def _noise_bank(ws: Workspace, t, mixing: bool, description: str):
    """WavLM's noise bank read from `t.noise_dir` (`data.noise_bank`), or None (no folder,
    or nothing would draw from it). Rows hold at most `data.max_seconds` of audio, the
    longest a training utterance (and so twice the longest mixed segment) can be."""
    from papt_jax.data.audio import SAMPLE_RATE
    from papt_jax.data.noise_bank import load_noise_bank

    folder = str(t.noise_dir)
    if not folder:
        return None
    if not mixing or float(t.noise_prob) == 0:
        log.warning(
            "%s: --config.pretrain.noise_dir=%s is not used: %s",
            description,
            folder,
            "utterance mixing is off" if not mixing else "--config.pretrain.noise_prob is 0",
        )
        return None
    length = round(float(ws.config.data.max_seconds) * SAMPLE_RATE)
    return load_noise_bank(folder, length, bool(ws.config.data.resample))


def _loss_config(t, objective: str, mixing: bool, noise: bool = False):
    """`pretrain.PretrainLossConfig` of the objective from the config section `t`; `noise`:
    a noise bank is given, which `t.noise_prob` of the mixed utterances draw from."""
    from papt_jax.utterance_mixing import MixingConfig

    noise_prob = float(t.noise_prob) if noise else 0.0
    contrastive = None
    if objective == "contrastive":
        contrastive = pretrain.ContrastiveSettings(
            num_negatives=int(t.num_negatives),
            diversity_weight=float(t.diversity_weight),
            temperature=(
                float(t.gumbel_temp_max),
                float(t.gumbel_temp_min),
                float(t.gumbel_temp_decay),
            ),
            step_offset=int(t.gumbel_step_offset),
        )
    return pretrain.PretrainLossConfig(
        mask_prob=float(t.mask_prob),
        mask_length=int(t.mask_length),
        features_pen_weight=float(t.features_pen_weight),
        objective=objective,
        mixing=MixingConfig(prob=float(t.mixing_prob), noise_prob=noise_prob) if mixing else None,
        contrastive=contrastive,
    )


def quantizer_dropout(setting: float, checkpoint_value: float | None) -> tuple[float, str]:
    """The quantizer-input dropout rate of a run and where it comes from.

    Args:
      setting: `pretrain.quantizer_dropout`; -1: the checkpoint's own.
      checkpoint_value: the rate the quantizer's source file states, or None (a fresh
        quantizer, a file without it).

    Returns:
      (rate, 'config' | "checkpoint's own" | "fairseq's default").
    """
    if setting >= 0:
        return float(setting), "config"
    if checkpoint_value is not None:
        return float(checkpoint_value), "checkpoint's own"
    return float(FAIRSEQ_WAV2VEC2_LARGE["quantizer_dropout"]), "fairseq's default"


def _quantizer(encoder, t, description: str):
    """wav2vec 2.0's head: the checkpoint's quantizer, else a fresh one of the config's
    shape; its input dropout `t.quantizer_dropout` (-1: the checkpoint's own rate)."""
    from papt_jax.models.quantizer import QuantizerHeadConfig

    fresh = QuantizerHeadConfig(
        num_codevector_groups=int(t.num_codevector_groups),
        num_codevectors_per_group=int(t.num_codevectors_per_group),
        codevector_dim=int(t.codevector_dim),
        proj_codevector_dim=int(t.final_dim),
    )
    head_cfg, head_params = pretrain.choose_quantizer(
        encoder.quantizer_config, encoder.quantizer_params, fresh
    )
    own = head_cfg.feat_quantizer_dropout if head_params is not None else None
    rate, origin = quantizer_dropout(float(t.quantizer_dropout), own)
    log.info("%s: quantizer-input dropout %g (%s)", description, rate, origin)
    head_cfg = dataclasses.replace(head_cfg, feat_quantizer_dropout=rate)
    return head_cfg, head_params, "checkpoint's quantizer" if head_params is not None else "fresh"


def _pretrain(
    ws: Workspace,
    out: Path,
    encoder,
    fusion: str,
    labels_dir: Path | None,
    t,
    own_labels: bool,
    description: str,
    recipe_dropout: bool = True,
) -> dict[str, Any] | None:
    """One continued pre-training run into `out`; None when stopped before the end.

    The objective is `t.objective` resolved for the encoder's family (`objectives`);
    masked prediction reads the pseudo-labels in `labels_dir`. With `recipe_dropout`, the
    encoder's dropout rates are the config's (`t.*_dropout`, the HuBERT recipe), not
    whatever the source checkpoint's config says.
    """
    family = encoder.config.family
    objective = objectives.resolve(str(t.objective), family)
    mixing = objectives.mixing_on(str(t.utterance_mixing), family, objective)
    log.info(
        "%s: %s objective for the %s encoder%s",
        description,
        objective.replace("_", " "),
        family,
        f", utterance mixing p={float(t.mixing_prob):g}" if mixing else "",
    )
    enc_cfg, enc_params = with_speakers(encoder, fusion, ws.num_speakers(), ws.config)
    if recipe_dropout:
        enc_cfg = enc_cfg.replace(**{k: float(t[k]) for k in DROPOUT_KEYS})
    targets = None
    if objective == "masked_prediction":
        if labels_dir is None or not labels_dir.is_dir():
            raise settings.ConfigError(
                f"{description}: masked prediction needs pseudo-labels, and this run has none "
                f"for the {family} encoder of --config.model.init",
                hint="run the pseudo_labels stage (--config.stages), or choose "
                "--config.pretrain.objective=contrastive for a wav2vec2 encoder",
            )
        targets = pseudo_label_files.load_pseudo_labels(str(labels_dir))
        num_clusters = int(np.load(labels_dir / pseudo_label_files.CENTROIDS_FILE).shape[0])
        head_cfg, head_params, head_source = _head(
            encoder, num_clusters, int(t.final_dim), own_labels
        )
    else:
        head_cfg, head_params, head_source = _quantizer(encoder, t, description)
    noise = _noise_bank(ws, t, mixing, description)
    model = pretrain.PretrainModelConfig(
        encoder_config=enc_cfg,
        head_config=head_cfg,
        loss=_loss_config(t, objective, mixing, noise is not None),
    )
    run_settings = pretrain.PretrainSettings(
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
        checkpoint_every_minutes=float(ws.config.train.checkpoint_every_minutes),
        seed=int(ws.config.seed),
        accumulate_steps=int(ws.config.train.accumulate_steps),
        param_sharding=ws.config.train.param_sharding,
    )
    train_data = ws.train_data(t.train_splits, targets, crop_to_shortest=bool(t.crop_to_shortest))
    eval_batches, _ = ws.eval_batches(t.eval_split, targets)
    result, best = pretrain.run_pretraining(
        model,
        run_settings,
        enc_params,
        head_params,
        train_data,
        eval_batches,
        ws.mesh,
        str(out),
        description=description,
        noise=None if noise is None else (noise.noise, noise.mask),
    )
    if not result.finished:
        log.info("pretrain stopped at step %d (stop_after_steps); run again to resume", result.step)
        return None
    from papt_jax.convert import ConvertedCheckpoint, save_converted

    contrastive = objective == "contrastive"
    with atomic_dir(out / "encoder") as tmp:
        save_converted(
            ConvertedCheckpoint(
                enc_cfg.replace(dtype="float32", remat="none"),
                best["hubert"],
                None if contrastive else head_cfg,
                None if contrastive else best["head"],
                "papt_jax",
                quantizer_config=head_cfg if contrastive else None,
                quantizer_params=best["head"] if contrastive else None,
            ),
            tmp,
            overwrite=True,
        )
    return {
        "steps": result.step,
        "best_loss": result.best,
        "objective": objective,
        "utterance_mixing": mixing,
        "noise_files": 0 if noise is None else len(noise.files),
        "head": head_source,
        **({"quantizer_dropout": head_cfg.feat_quantizer_dropout} if contrastive else {}),
    }


def _labels_problem(labels_dir: Path) -> str | None:
    """Why an earlier attempt's pseudo-labels cannot be used, or None."""
    try:
        pseudo_label_files.load_pseudo_labels(str(labels_dir))
    except pseudo_label_files.PseudoLabelError as e:
        return e.message
    return None


def bootstrap_needed(config: ml_collections.ConfigDict) -> bool:
    return "bootstrap" in (config.model.init, config.pseudo_labels.teacher)


def run_bootstrap(ws: Workspace) -> dict[str, Any] | None:
    """The family's own pre-training in miniature, from scratch: HuBERT iteration 1 (MFCC
    k-means labels) for masked prediction, or wav2vec 2.0's contrastive loss."""
    if not bootstrap_needed(ws.config):
        log.info("bootstrap: not needed (model.init=%s)", ws.config.model.init)
        return {"needed": False}
    b = ws.config.bootstrap
    out = ws.stage_dir("bootstrap")
    labels_dir = out / "pseudo_labels"
    objective = objectives.bootstrap_objective(settings.flatten(ws.config))
    problem = _labels_problem(labels_dir) if labels_dir.is_dir() else None
    if problem is not None:
        # Its checkpoints were trained on these labels: the whole attempt starts over.
        log.warning("bootstrap: starts over: its MFCC pseudo-labels are damaged (%s)", problem)
        remove(out)
        out = ws.stage_dir("bootstrap")
    if objective == "masked_prediction" and not labels_dir.is_dir():
        # renamed into place only once complete
        splits = f"{b.train_splits},{b.eval_split}"
        _compute_labels(
            ws, labels_dir, "mfcc", "", 0, int(b.num_clusters), splits, "bootstrap: MFCC labels"
        )
    encoder = random_encoder(get_preset(b.preset), int(ws.config.seed))
    t = ml_collections.ConfigDict(dict(ws.config.pretrain))
    t.update(
        epochs=b.epochs,
        peak_lr=b.peak_lr,
        mask_prob=b.mask_prob,
        features_pen_weight=b.features_pen_weight,
        train_splits=b.train_splits,
        eval_split=b.eval_split,
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
    if not objectives.labels_needed(settings.flatten(ws.config)):
        log.info("pseudo_labels: not needed (the contrastive objective has no labels)")
        return {"needed": False}
    p = ws.config.pseudo_labels
    t = ws.config.pretrain
    _compute_labels(
        ws,
        ws.path("pseudo_labels"),
        p.source,
        p.teacher,
        int(p.layer),
        int(p.num_clusters),
        f"{t.train_splits},{t.eval_split}",
        "pseudo-labels",
    )
    return {"num_clusters": int(p.num_clusters), "source": p.source}


def run_pretrain(ws: Workspace) -> dict[str, Any] | None:
    encoder = ws.load_encoder(ws.config.model.init)
    labels_dir = ws.path("pseudo_labels")
    return _pretrain(
        ws,
        ws.stage_dir("pretrain"),
        encoder,
        ws.config.pretrain.speaker_fusion,
        labels_dir if labels_dir.is_dir() else None,
        ws.config.pretrain,
        own_labels=bool(ws.config.pseudo_labels.centroids),
        description="PAPT" if ws.config.pretrain.speaker_fusion != "none" else "TAPT",
    )
