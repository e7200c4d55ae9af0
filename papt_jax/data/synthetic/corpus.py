"""Writes a synthetic corpus in the MSP-Podcast layout: audio, both releases' labels, truth.

Layout written under ``out_dir``::

    Audios/<FileName>.wav               16 kHz, mono, PCM_16
    Labels/labels_consensus.csv         the older release (like MSP-Podcast v1.6)
    Labels_new/labels_consensus.csv     the newer release (like v1.10), sharing Audios/
    ground_truth.json                   speaker traits, label distributions, preset, per-file facts
    README.txt                          what this is and what generated it
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf

from papt_jax import progress as progress_lib
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.data.msp_podcast import CSV_COLUMNS
from papt_jax.data.synthetic.presets import CorpusPreset, resolve_preset
from papt_jax.data.synthetic.speakers import (
    ROLE_CODE,
    ROLE_SPLIT,
    Speaker,
    draw_labels,
    emo_class,
    make_speakers,
)
from papt_jax.data.synthetic.voice import synthesize_utterance, to_int16

GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class _Utterance:
    file_name: str
    speaker: Speaker
    index: int
    duration_s: float
    labels: dict[str, float]

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * SAMPLE_RATE))

    def csv_row(self) -> list[str]:
        lab = self.labels
        return [
            self.file_name,
            emo_class(lab["arousal"], lab["valence"]),
            f"{lab['arousal']:.4f}",
            f"{lab['valence']:.4f}",
            f"{lab['dominance']:.4f}",
            self.speaker.spkr_id,
            self.speaker.gender,
            ROLE_SPLIT[self.speaker.role],
        ]


def _utts_per_speaker(preset: CorpusPreset, role: str) -> int:
    return {
        "train": preset.utts_per_train_speaker,
        "dev": preset.utts_per_dev_speaker,
        "test": preset.utts_per_test_speaker,
        "test2": preset.utts_per_test2_speaker,
        "new": preset.utts_per_new_speaker,
    }[role]


def _plan_utterances(preset: CorpusPreset, speakers: list[Speaker], seed: int) -> list[_Utterance]:
    """Labels and durations of every utterance (the audio is drawn later, per file)."""
    hidden = [s for s in speakers if s.role == "hidden"]
    counts = {id(s): _utts_per_speaker(preset, s.role) for s in speakers if s.role != "hidden"}
    # Unknown rows are dealt round-robin to the hidden voices.
    for k in range(preset.num_unknown_rows):
        key = id(hidden[k % len(hidden)])
        counts[key] = counts.get(key, 0) + 1
    utterances = []
    for speaker in speakers:
        hidden_index = hidden.index(speaker) if speaker.role == "hidden" else 0
        for i in range(counts.get(id(speaker), 0)):
            rng = np.random.default_rng(
                [seed, ROLE_CODE[speaker.role], speaker.number, hidden_index, i, 2]
            )
            duration = round(float(rng.uniform(preset.min_duration_s, preset.max_duration_s)), 3)
            labels = draw_labels(rng, speaker, preset.labels)
            # Hidden voices share file-name number 0; keep their utterance indices distinct.
            index = i + 1 + 100 * hidden_index if speaker.role == "hidden" else i + 1
            name = f"SYN_{speaker.number:04d}_{index:04d}.wav"
            utterances.append(_Utterance(name, speaker, index, duration, labels))
    return sorted(utterances, key=lambda u: u.file_name)


def _check_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; refusing to overwrite it. Choose an empty or new "
                "directory, or pass overwrite=True (CLI: --overwrite) to replace the corpus."
            )
        # Only the generator's own outputs are removed, so stale audio cannot linger.
        for name in ("Audios", "Labels", "Labels_new"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        for name in ("ground_truth.json", "README.txt"):
            (out_dir / name).unlink(missing_ok=True)


def _write_csv(path: pathlib.Path, utterances: Sequence[_Utterance]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(CSV_COLUMNS)] + [",".join(u.csv_row()) for u in utterances]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def _suggest_test_a_seconds(preset: CorpusPreset, utterances: Sequence[_Utterance]) -> float:
    totals: dict[str, float] = {}
    for u in utterances:
        if u.speaker.role in ("test", "new"):
            totals[u.speaker.spkr_id] = totals.get(u.speaker.spkr_id, 0.0) + u.duration_s
    return float(np.floor(preset.test_a_fraction * min(totals.values()) * 10.0) / 10.0)


def _ground_truth(
    preset: CorpusPreset, seed: int, speakers: list[Speaker], utterances: list[_Utterance]
) -> dict[str, Any]:
    return {
        "generator": "papt_jax.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "test_a_seconds": _suggest_test_a_seconds(preset, utterances),
        "preset": dataclasses.asdict(preset),
        "speakers": {
            s.spkr_id: {
                "role": s.role,
                "split": ROLE_SPLIT[s.role],
                "gender": s.gender,
                "new_release_only": s.role == "new",
                "traits": s.traits,
                "labels": s.label_params,
            }
            for s in speakers
            if s.role != "hidden"
        },
        "hidden_speakers": [
            {"gender": s.gender, "traits": s.traits, "labels": s.label_params}
            for s in speakers
            if s.role == "hidden"
        ],
        "utterances": {
            u.file_name: {
                "speaker": u.speaker.spkr_id,
                "split": ROLE_SPLIT[u.speaker.role],
                "release": "new" if u.speaker.role == "new" else "old",
                "duration_s": u.duration_s,
                "num_samples": u.num_samples,
                **u.labels,
            }
            for u in utterances
        },
    }


def _readme(preset: CorpusPreset, seed: int, total_s: float, num_files: int) -> str:
    return (
        "This is a SYNTHETIC podcast-like speech-emotion corpus, not recorded speech. It was "
        f"generated by papt_jax.data.synthetic (generator version {GENERATOR_VERSION}) with "
        f"preset '{preset.name}' and seed {seed}: {num_files} utterances, "
        f"{total_s / 60.0:.1f} minutes of 16 kHz mono PCM_16 audio made by source-filter "
        "synthesis (glottal pulses with an f0 contour, aspiration noise, spectral tilt and "
        "formant resonators under a syllable-rate envelope). It follows the MSP-Podcast "
        "layout: Labels/labels_consensus.csv is the older release, Labels_new/ the newer one "
        "with extra Test1 speakers, both sharing Audios/. Labels come from per-speaker "
        "distributions tied to voice traits, and arousal (strongly) and valence (weakly) "
        "shape the acoustics; ground_truth.json records every parameter. It exists to "
        "exercise the papt_jax pipeline and says nothing about real speech.\n"
    )


def generate_corpus(
    out_dir: str | pathlib.Path,
    preset: str | CorpusPreset = "smoke",
    seed: int = 0,
    overwrite: bool = False,
    *,
    progress: bool | None = None,
) -> pathlib.Path:
    """Writes a deterministic synthetic corpus in the MSP-Podcast layout.

    The same preset and seed give byte-identical files. The older release's rows are
    also byte-identical inside the newer release's CSV.

    Args:
      out_dir: Corpus directory; created if missing, must be empty unless `overwrite`.
      preset: A name in `CORPUS_PRESETS` ('smoke', 'demo') or a `CorpusPreset`.
      seed: Seed of every random choice.
      overwrite: Replace the generator's outputs in a non-empty `out_dir`.
      progress: Show a progress bar (`papt_jax.progress`); None shows it for every preset
        but 'smoke'.

    Returns:
      The corpus directory.

    Raises:
      FileExistsError: `out_dir` is not empty and `overwrite` is False.
      ValueError: Unknown preset name.
    """
    preset = resolve_preset(preset)
    out_dir = pathlib.Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    speakers = make_speakers(preset, seed)
    utterances = _plan_utterances(preset, speakers, seed)

    audio_dir = out_dir / "Audios"
    audio_dir.mkdir(parents=True, exist_ok=True)
    show = preset.name != "smoke" if progress is None else progress
    for u in progress_lib.bar(utterances, desc=f"synthesizing {preset.name}", disable=not show):
        rng = np.random.default_rng([seed, ROLE_CODE[u.speaker.role], u.speaker.number, u.index, 3])
        wave = synthesize_utterance(
            rng,
            u.speaker.traits,
            u.labels["arousal"],
            u.labels["valence"],
            u.duration_s,
            preset.cues,
        )
        sf.write(audio_dir / u.file_name, to_int16(wave), SAMPLE_RATE, subtype="PCM_16")

    old = [u for u in utterances if u.speaker.role != "new"]
    _write_csv(out_dir / "Labels" / "labels_consensus.csv", old)
    _write_csv(out_dir / "Labels_new" / "labels_consensus.csv", utterances)
    truth = _ground_truth(preset, seed, speakers, utterances)
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    total_s = sum(u.duration_s for u in utterances)
    (out_dir / "README.txt").write_text(_readme(preset, seed, total_s, len(utterances)))
    return out_dir
