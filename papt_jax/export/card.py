"""The README.md model card of an exported folder: what it is, its data, its scores, its use."""

from __future__ import annotations

import math
from typing import Any

from papt_jax.predict.assets import RunAssets

_VARIANTS = (("system", "plain"), ("mu", "+ μ shift"), ("sigma", "+ σ shift"), ("both", "+ (μ, σ)"))


def _training_data(config: dict[str, Any], info: dict[str, Any]) -> list[str]:
    data = config.get("data", {})
    preset = data.get("synthetic_preset")
    if preset:
        corpus = (
            f"the embedded SYNTHETIC corpus (preset `{preset}`, seed {config.get('seed')}): "
            "source-filter speech made to exercise the pipeline; its scores say nothing "
            "about real speech"
        )
    else:
        corpus = f"MSP-Podcast at `{data.get('corpus_dir', '?')}`"
        if data.get("labels_file"):
            corpus += f" (labels `{data['labels_file']}`)"
    return [
        f"- Corpus: {corpus}.",
        f"- Fine-tuned on the `{data.get('train_splits', '?')}` split(s): "
        f"{info['num_training_speakers']} training speakers; the speaker table has "
        f"{info['num_speakers']} rows (every speaker of the adaptation data, `speakers.json`).",
        f"- Encoder before adaptation (`model.init`): `{config.get('model', {}).get('init')}`; "
        f"speaker fusion `{config.get('pretrain', {}).get('speaker_fusion', '?')}`.",
    ]


def _number(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _scores(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return ["The run has no report (report/summary.json), so no scores are included."]
    lines = []
    for split, dims in summary.get("splits", {}).items():
        names = list(dims)
        lines += [f"**{split}** (O-CCC / A-CCC, std across speakers in brackets)", ""]
        lines.append("| variant | " + " | ".join(names) + " |")
        lines.append("| --- |" + " --- |" * len(names))
        for key, label in _VARIANTS:
            cells = []
            for dim in names:
                v = dims[dim].get(key)
                if v is None:
                    cells.append("–")
                    continue
                cells.append(
                    f"{_number(v.get('o_ccc'))} / {_number(v.get('a_ccc'))} "
                    f"({_number(v.get('a_ccc_std'))})"
                )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        counts = "; ".join(
            f"{d}: {dims[d].get('n_utterances')} utterances, {dims[d].get('n_speakers')} speakers"
            for d in names
        )
        lines += ["", counts + ".", ""]
    return lines


def model_card(assets: RunAssets, info: dict[str, Any], to_hf: bool) -> str:
    """The README.md text for an export of `assets` (manifest `info`)."""
    name = info.get("name") or "papt_jax model"
    dims = ", ".join(info["dimensions"])
    lines = [
        f"# {name}: continuous emotion regressors ({dims})",
        "",
        "Exported by `python -m papt_jax.export` from a finished papt_jax run "
        "(PAPT: personalized adaptive pre-training of HuBERT with a speaker-embedding table, "
        "fine-tuning with 1 - CCC, and PLDC calibration; Tran, Yin, Soleymani, Interspeech "
        f"2023). Model id `{info['model_id']}`.",
        "",
        "## Training data",
        "",
        *_training_data(assets.config, info),
        "",
        "## Scores of the run's evaluation",
        "",
        "test-b: held-out utterances of training speakers (their own embedding); test-c: "
        "speakers never seen (proxy speaker chosen with the original encoder). PLDC retrieves "
        f"k = {info['pldc_k']} training speakers.",
        "",
        *_scores(assets.summary),
        "## Use",
        "",
        "```",
        "python -m papt_jax.predict --export=THIS_FOLDER --audio=FILES_OR_FOLDERS --out=out.csv",
        "python -m papt_jax.predict --export=THIS_FOLDER --audio=... --out=... --speaker=ID",
        "python -m papt_jax.predict --export=THIS_FOLDER --enroll=SPEAKER_FOLDER "
        "--save_profile=speaker.json",
        "python -m papt_jax.predict --export=THIS_FOLDER --profile=speaker.json --audio=... "
        "--out=...",
        "```",
        "",
        "```python",
        "from papt_jax import Predictor",
        "p = Predictor.from_export('THIS_FOLDER')",
        "out = p.predict([waveform], sample_rate=16000)  # {dimension: {variant: array}}",
        "```",
        "",
        "Without a speaker the output is the plain regressor (fed the average training "
        "speaker's embedding). `--speaker` takes an id of `speakers.json`; a new speaker is "
        "enrolled from at least 2 recordings and 10 s of speech.",
        "",
        "## Contents",
        "",
        "- `regressors/<dimension>/`: fine-tuned encoder (with its speaker table), regression "
        "head and batch statistics (`variables/`, Orbax), `encoder_config.json`",
        "- `reference.npz`: PLDC statistics of the training speakers (mean fine-tuned "
        "representation, label mean and std per dimension) and their mean original-encoder "
        "representations (speaker retrieval for enrollment)",
        "- `original_encoder/`: the encoder before adaptation (converted checkpoint)",
        "- `config.json` (the run's config), `speakers.json`, `summary.json` (scores), "
        "`manifest.json` (format, model id, label scaling)",
    ]
    if to_hf:
        lines.append(
            "- `hf/<dimension>/`: each regressor's encoder as a Hugging Face HuBERT directory "
            "(speaker table in `speaker_embedding.safetensors`; the head is not part of it); "
            "`hf/adapted/`: the adapted encoder before fine-tuning, when the run has one"
        )
    return "\n".join(lines) + "\n"
