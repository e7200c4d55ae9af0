"""Helpers of the prediction tests: the shared smoke run's audio and evaluation passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

# One bucket that holds every smoke utterance (1-3 s): one compiled shape per model.
SETTINGS = {"window_seconds": 4.0, "num_buckets": 1, "batch_seconds": 32.0}


def audio_path(workdir: Path, key: str) -> Path:
    return Path(workdir) / "corpus" / "Audios" / key


def read_waves(workdir: Path, keys) -> list[np.ndarray]:
    """The corpus files of `keys` as float32 arrays (what the dataset stores, / 32768)."""
    return [soundfile.read(audio_path(workdir, str(k)), dtype="float32")[0] for k in keys]


def passes(workdir: Path, name: str = "arousal") -> dict[str, np.ndarray]:
    with np.load(Path(workdir) / "evaluate" / "passes" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def split_keys(workdir: Path, split: str) -> dict[str, np.ndarray]:
    """{speaker id: keys of its utterances in `split` ('test_b' or 'test_c')}."""
    p = passes(workdir)
    keys, speakers = p[f"{split}/key"], p[f"{split}/speaker_id"].astype(str)
    return {s: keys[speakers == s] for s in np.unique(speakers)}
