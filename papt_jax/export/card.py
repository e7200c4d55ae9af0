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
        f"Predictions lie on the scale {info['output_scale']['min']:g}.."
        f"{info['output_scale']['max']:g} ({info['output_scale']['source']}).",
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


_ONNX_USE = """```python
import numpy as np, onnxruntime as ort

predictor = ort.InferenceSession("predictor.onnx")
audio = np.zeros((2, 32000), np.float32)  # (batch, samples): 16 kHz mono in [-1, 1]
audio_mask = np.zeros((2, 32000), bool)  # True on each row's real samples
audio[0], audio_mask[0] = wave_2s, True
audio[1, :16000], audio_mask[1, :16000] = wave_1s, True
inputs = {"audio": audio, "audio_mask": audio_mask}
{speaker}out = dict(zip([o.name for o in predictor.get_outputs()], predictor.run(None, inputs)))
out["arousal"], out["arousal_pooled"], out["frames"]
```"""

_STABLEHLO_USE = """```python
import jax, numpy as np

predictor = jax.export.deserialize(bytearray(open("predictor.jax", "rb").read()))
weights = dict(np.load("weights.npz"))
out = predictor.call(weights, audio, audio_mask{speaker_arg})  # {name: array}
```

`audio` is (batch, samples) float32 at 16 kHz in [-1, 1], zero after each row's end;
`audio_mask` (batch, samples) bool is True on the real samples. The graphs were lowered for
{platforms}."""


def portable_card(assets: RunAssets, info: dict[str, Any]) -> str:
    """The README.md of an ONNX or StableHLO export (`model.json` as `info`)."""
    onnx = info["format"] == "papt_jax.onnx"
    dims = ", ".join(info["dimensions"])
    scale = info["output_scale"]
    speaker = info["speaker"]
    check = info["check"]["max_abs_difference"]
    if "input" in speaker:
        speaker_line = (
            "`speaker` (batch,) int32 is an input: the speaker-table row of each batch row "
            f"(`speaker.rows` in model.json; row {speaker['average_row']} is the average "
            "training speaker, the plain output)."
        )
        code_speaker = 'inputs["speaker"] = np.full(2, AVERAGE_ROW, np.int32)  # model.json\n'
        speaker_arg = ", speaker"
    elif "folded" in speaker:
        speaker_line = f"The speaker is folded in: {speaker['folded']['what']}."
        code_speaker, speaker_arg = "", ""
    else:
        speaker_line = "The model has no speaker embedding."
        code_speaker, speaker_arg = "", ""
    use = (
        _ONNX_USE.replace("{speaker}", code_speaker)
        if onnx
        else _STABLEHLO_USE.replace("{speaker_arg}", speaker_arg).replace(
            "{platforms}", ", ".join(info["check"]["platforms"])
        )
    )
    kind = "ONNX" if onnx else "StableHLO (jax.export)"
    lines = [
        f"# {info.get('name') or 'papt_jax model'}: {dims} regressors as {kind}",
        "",
        f"Exported by `python -m papt_jax.export --format={info['format'].split('.')[1]}` "
        f"from a finished papt_jax run (model id `{info['model_id']}`). The graphs are the "
        "whole predictor: feature extractor, encoder with speaker fusion, mean pooling and the "
        f"regression heads. Outputs lie on the scale {scale['min']:g}..{scale['max']:g} "
        f"({scale['source']}).",
        "",
        "## Training data",
        "",
        *_training_data(
            assets.config,
            {
                "num_training_speakers": len(next(iter(assets.references.values())).speaker_index),
                "num_speakers": len(assets.speakers),
            },
        ),
        "",
        "## Scores of the run's evaluation",
        "",
        *_scores(assets.summary),
        "## Use",
        "",
        use,
        "",
        speaker_line,
        "",
        "Outputs per row: `<dimension>` (the prediction), `<dimension>_pooled` (the mean of "
        "the row's encoder frames) and `frames`. Rows are independent of what they are "
        "batched with. Checked against JAX before writing (largest absolute differences: "
        f"outputs {check['vs_jax']:.2g}, padded rows vs the same rows alone "
        f"{check['padded_vs_alone']:.2g}, head {check['head_vs_jax']:.2g}).",
        "",
        "## Long recordings",
        "",
        f"Cut a recording into windows of at most {info['windowing']['window_seconds']:g} s "
        "as `windowing.cut` in model.json says, run the windows, and feed the frame-weighted "
        "mean of their `<dimension>_pooled` (weights: `frames`) to the head graph "
        f"(`{info['files']['head']}`): that is the recording's value, as "
        "`python -m papt_jax.predict` computes it. Each window's own output is its value.",
        "",
        "## Personalisation (PLDC)",
        "",
        "`pldc.json` holds the formula, k, and each training speaker's label mean and std per "
        "dimension; `pldc_vectors.npz` their mean representations (the neighbour search). "
        "New speakers are enrolled with papt_jax (the original encoder is not in these "
        "graphs); their saved profile holds every number the formula needs.",
        "",
        "## Files",
        "",
        *(f"- `{name}`" for name in info["files"].values()),
        "- `model.json`: inputs, outputs, scale, speakers, windowing, checks, the run's "
        "config and metrics",
    ]
    return "\n".join(lines) + "\n"
