"""What an export states beside its graphs: `model.json` and `pldc.json` (+ `pldc_vectors.npz`).

`model.json` describes the graphs (inputs, outputs, shapes), the audio they take (16 kHz mono
float in [-1, 1], padded with zeros and a False mask), the output scale and what papt_jax
refuses and flags (minimum duration, predictions outside the scale), the dimensions, the
speakers, the frame arithmetic, how to cut a long recording into windows and combine them as
`papt_jax.predict` does, the checks run on the files, and the config and metrics of the run
it came from. `pldc.json` holds what personalisation needs: the formula, k, each training
speaker's label statistics per dimension (their mean representations in
`pldc_vectors.npz`), and the folded speaker's or profile's own statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from papt_jax.data.audio import FRAME_HOP, RECEPTIVE_FIELD, SAMPLE_RATE
from papt_jax.data.msp_podcast import LABEL_MAX, LABEL_MIN
from papt_jax.export.graph import AUDIO, AUDIO_MASK, FRAMES, SPEAKER, PredictorGraph, pooled_name
from papt_jax.pldc import MODES
from papt_jax.predict.assets import RunAssets
from papt_jax.predict.limits import min_seconds_basis
from papt_jax.predict.profiles import SpeakerProfile
from papt_jax.predict.windows import Batching

MODEL_FILE = "model.json"
PLDC_FILE = "pldc.json"
VECTORS_FILE = "pldc_vectors.npz"
VERSION = 1


def output_scale(assets: RunAssets) -> dict[str, Any]:
    """The range the model's predictions are on, and where it comes from.

    A model's record may state it (`config["output_scale"] = {"min", "max"}`, as a model
    converted from another project's labels must). Otherwise the run's labels were read with
    the MSP-Podcast schema (`papt_jax.data.msp_podcast`), and its regressors predict on that
    scale whatever their label scaling ('unit' maps predictions back).
    """
    stated = assets.config.get("output_scale")
    if stated:
        return {"min": float(stated["min"]), "max": float(stated["max"]), "source": "record"}
    return {
        "min": LABEL_MIN,
        "max": LABEL_MAX,
        "source": "MSP-Podcast consensus ratings, the schema the run read its labels with",
    }


def limits_section(assets: RunAssets) -> dict[str, Any]:
    """What `papt_jax.predict` refuses and flags (`predict.limits`), for users of the graphs."""
    return {
        "min_seconds": round(assets.min_seconds, 4),
        "min_seconds_basis": min_seconds_basis(assets.shortest_train_s),
        "too_short": "papt_jax refuses recordings shorter than min_seconds (the model never "
        "saw anything that short); no window of a longer one is shorter either",
        "outside_scale": "a prediction outside output_scale is no score: papt_jax keeps it, "
        "flags it (outside_scale) and leaves it out of a speaker's PLDC statistics",
    }


def windowing(batching: Batching) -> dict[str, Any]:
    """How `papt_jax.predict` cuts and recombines recordings, for users of the graphs."""
    return {
        "window_seconds": batching.window_seconds,
        "max_frames_per_window": batching.max_frames,
        "frames": f"frames(T) = (T - {RECEPTIVE_FIELD}) // {FRAME_HOP} + 1 for T samples",
        "cut": (
            "F = frames(T); W = max_frames_per_window; n = ceil(F / W) windows; window i has "
            "f_i = F // n frames, one more for the first F % n windows; it starts at sample "
            f"{FRAME_HOP} * (f_0 + ... + f_(i-1)) and spans {RECEPTIVE_FIELD} + {FRAME_HOP} * "
            "(f_i - 1) samples, the last window running to the end of the recording. A "
            "recording of at most W frames is one window, unchanged."
        ),
        "per_window": (
            "run the predictor on the windows (any batch, padded with zeros and audio_mask "
            "False): <dim> is each window's value"
        ),
        "combine": (
            "the recording's <dim>_pooled is sum_i frames_i * <dim>_pooled_i / sum_i frames_i "
            "(in float64), fed to the head graph: its <dim> is the recording's value"
        ),
        "sliding": (
            "papt_jax.predict --hop_seconds=H instead starts a window of exactly W frames "
            f"every h = (H * {SAMPLE_RATE}) // {FRAME_HOP} frames: n = ceil((F - W) / h) + 1 "
            "windows, the last one starting at frame F - W and running to the end"
        ),
    }


def _io(graph: PredictorGraph) -> dict[str, Any]:
    inputs = {
        AUDIO: {
            "shape": ["batch", "samples"],
            "dtype": "float32",
            "meaning": "16 kHz mono "
            "waveform in [-1, 1], zeros after each row's end; samples >= 400",
        },
        AUDIO_MASK: {
            "shape": ["batch", "samples"],
            "dtype": "bool",
            "meaning": "True on each row's real samples (a prefix of the row)",
        },
    }
    if graph.speaker_input:
        inputs[SPEAKER] = {
            "shape": ["batch"],
            "dtype": "int32",
            "meaning": "speaker-table row per batch row (speaker.rows; speaker.average_row: plain)",
        }
    outputs = {
        d: {"shape": ["batch"], "dtype": "float32", "meaning": "prediction on output_scale"}
        for d in graph.dimensions
    }
    outputs.update(
        {
            pooled_name(d): {
                "shape": ["batch", graph.hidden_size[d]],
                "dtype": "float32",
                "meaning": "mean of the row's encoder frames (PLDC vector; windows combine by it)",
            }
            for d in graph.dimensions
        }
    )
    outputs[FRAMES] = {"shape": ["batch"], "dtype": "int32", "meaning": "encoder frames"}
    return {"inputs": inputs, "outputs": outputs}


def speaker_section(assets: RunAssets, graph: PredictorGraph, folded: str | None) -> dict:
    if not graph.fuses_speakers:
        return {"fusion": "none", "note": "the model has no speaker embedding"}
    section = {
        "fusion": next(iter(assets.regressors.values())).encoder_config.speaker_fusion,
        "average_row": graph.average_row,
        "rows": {sid: i for i, sid in enumerate(assets.speakers)},
    }
    if graph.speaker_input:
        section["input"] = SPEAKER
    else:
        section["folded"] = {"row": graph.speaker_row, "what": folded}
    return section


def model_json(
    assets: RunAssets,
    graph: PredictorGraph,
    fmt: str,
    files: dict[str, str],
    check: dict,
    folded: str | None,
    batching: Batching,
) -> dict[str, Any]:
    """The `model.json` of an export in format `fmt` ('onnx' or 'stablehlo')."""
    return {
        "format": f"papt_jax.{fmt}",
        "version": VERSION,
        "model_id": assets.model_id,
        "name": assets.config.get("name", ""),
        "files": {**files, "pldc": PLDC_FILE, "pldc_vectors": VECTORS_FILE},
        **_io(graph),
        "head": {
            "inputs": [pooled_name(d) for d in graph.dimensions],
            "outputs": list(graph.dimensions),
            "shape": ["rows"],
        },
        "sample_rate": SAMPLE_RATE,
        "dimensions": list(graph.dimensions),
        "output_scale": output_scale(assets),
        "limits": limits_section(assets),
        "label_scaling": {d: r.label_scaling for d, r in assets.regressors.items()},
        "speaker": speaker_section(assets, graph, folded),
        "windowing": windowing(batching),
        "check": check,
        "source": {"path": str(assets.source), "config": assets.config, "metrics": assets.summary},
    }


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float32)]


def pldc_json(
    assets: RunAssets, speaker: str | None, profile: SpeakerProfile | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(`pldc.json`, the arrays of `pldc_vectors.npz`) for an export.

    Args:
      assets: the run.
      speaker: the training speaker folded into the graph, if any.
      profile: the profile folded into the graph, if any.
    """
    training, vectors = {}, {}
    for dim, ref in assets.references.items():
        training[dim] = {
            "ids": [assets.speakers[int(i)] for i in ref.speaker_index],
            "rows": [int(i) for i in ref.speaker_index],
            "label_mean": _floats(ref.label_mean),
            "label_std": _floats(ref.label_std),
        }
        vectors[dim] = np.asarray(ref.vectors, np.float32)
    out = {
        "format": "papt_jax.pldc",
        "version": VERSION,
        "model_id": assets.model_id,
        "k": assets.pldc_k,
        "modes": list(MODES),
        "formula": {
            "mu": "y - prediction_mean + mu_bar",
            "sigma": "(y - prediction_mean) * sigma_bar / prediction_std + prediction_mean",
            "both": "(y - prediction_mean) * sigma_bar / prediction_std + mu_bar",
            "constant": "if a speaker's predictions are all equal, sigma_bar / prediction_std "
            "is taken as 1",
            "prediction_mean, prediction_std": "mean and population std (ddof 0) of the "
            "speaker's predictions of the dimension (over its recordings)",
            "neighbours": "the k training speakers whose vector (pldc_vectors.npz[<dim>], rows "
            "in training_speakers[<dim>] order) has the largest cosine similarity with the "
            "mean of the speaker's <dim>_pooled outputs (one per recording)",
            "mu_bar, sigma_bar": "means of the neighbours' label_mean and label_std",
            "new speakers": "their neighbours and proxy row come from the original encoder, "
            "which these graphs do not contain: enroll them with papt_jax (python -m "
            "papt_jax.predict --enroll=... --save_profile=...) and use the profile's numbers",
        },
        "training_speakers": training,
        "vectors_file": VECTORS_FILE,
    }
    if speaker is not None:
        out["folded_speaker"] = {"id": speaker, "row": assets.speakers.index(speaker)}
    if profile is not None:
        out["folded_profile"] = profile.to_dict()
    return out, vectors
