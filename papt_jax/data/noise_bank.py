"""A folder of noise recordings, read once into the fixed bank WavLM's utterance mixing uses.

WavLM (Chen et al., 2022) mixes either another utterance of the batch or noise into a
training input; the authors drew their noise from the DNS challenge set, as a list of
clips (microsoft/UniSpeech `utterance_mixing_dataset.py`, `noise_path`). Here the user
names a folder (`pretrain.noise_dir`); every audio file in it (any format libsndfile
reads, found recursively, hidden files skipped) becomes one row of a bank that lives on
the devices for the whole stage:

* read as the dataset reads speech (`data.audio.read_audio`): 16 kHz mono, another rate
  resampled only when `data.resample` is on, more than one channel refused, each problem
  naming its file;
* cropped to its first `length` samples (a bounded length, so the step compiles once for
  any folder) or padded with zeros, a mask marking the real samples.

`check_noise_dir` reads the headers only (cheap), so a config check can refuse an empty
or unreadable folder before any work starts.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from papt_jax.data import audio as audio_lib
from papt_jax.errors import UserError

log = logging.getLogger(__name__)


class NoiseDirError(UserError):
    """The noise folder holds no audio file, or one that cannot be used."""


@dataclasses.dataclass(frozen=True)
class NoiseBank:
    """Every noise file of a folder at one fixed length.

    Attributes:
      noise: (files, length) float32 waveforms in [-1, 1], zero-padded.
      mask: (files, length) bool, True on the file's samples.
      files: the files, in row order.
      cropped: how many files were longer than `length` and cut to their start.
    """

    noise: np.ndarray
    mask: np.ndarray
    files: tuple[Path, ...]
    cropped: int


def noise_files(folder: str | Path) -> list[Path]:
    """The audio files under `folder` (recursive; hidden files and folders skipped), sorted."""
    root = Path(folder)
    found = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts) or not path.is_file():
            continue
        if path.suffix.lower().lstrip(".") in audio_lib.audio_extensions():
            found.append(path)
    return sorted(found)


def check_noise_dir(folder: str | Path, resample: bool) -> list[Path]:
    """The folder's audio files, each header checked as the dataset checks speech.

    Args:
      folder: the noise folder.
      resample: other sample rates are resampled (`data.resample`) instead of refused.

    Returns:
      The audio files, sorted.

    Raises:
      NoiseDirError: no audio file, or one whose header cannot be used (named).
    """
    files = noise_files(folder)
    if not files:
        known = ", .".join(sorted(audio_lib.audio_extensions())[:6])
        raise NoiseDirError(
            f"the noise folder {folder} holds no audio file",
            hint=f"put audio files (.{known}, ...) in it, or "
            "set --config.pretrain.noise_dir='' to mix speech only",
        )
    for path in files:
        try:
            info = audio_lib.probe_audio(path)
            audio_lib.check_audio_info(info, path, audio_lib.SAMPLE_RATE, resample, "error")
        except audio_lib.AudioError as err:
            raise NoiseDirError(f"noise file {err.message}", hint=_hint(err)) from None
    return files


def _hint(err: audio_lib.AudioError) -> str:
    if isinstance(err, audio_lib.WrongSampleRate):
        return "resample it to 16 kHz, or set --config.data.resample=True"
    if isinstance(err, audio_lib.MultiChannelAudio):
        return "mix it down to one channel"
    return "replace or remove the file in --config.pretrain.noise_dir"


def load_noise_bank(folder: str | Path, length: int, resample: bool) -> NoiseBank:
    """Reads every audio file of `folder` into a (files, length) bank.

    Args:
      folder: the noise folder.
      length: samples per row: longer files keep their first `length` samples.
      resample: as `check_noise_dir`.

    Raises:
      NoiseDirError: see `check_noise_dir`; also a file that is silent, clipped or not
        finite (named).
    """
    if length < audio_lib.RECEPTIVE_FIELD:
        raise ValueError(f"length must be at least {audio_lib.RECEPTIVE_FIELD}, got {length}")
    files = check_noise_dir(folder, resample)
    noise = np.zeros((len(files), length), np.float32)
    mask = np.zeros((len(files), length), bool)
    cropped = 0
    for row, path in enumerate(files):
        try:
            samples = audio_lib.read_audio(
                path, resample=resample, channels="error", dtype="float32"
            )
        except audio_lib.AudioError as err:
            raise NoiseDirError(f"noise file {err.message}", hint=_hint(err)) from None
        cropped += samples.shape[0] > length
        kept = samples[:length]
        noise[row, : kept.shape[0]] = kept
        mask[row, : kept.shape[0]] = True
    log.info(
        "noise bank: %d file(s) from %s, %.1f s each at most (%d cropped), %.1f MB per device",
        len(files),
        folder,
        length / audio_lib.SAMPLE_RATE,
        cropped,
        (noise.nbytes + mask.nbytes) / 1e6,
    )
    return NoiseBank(noise=noise, mask=mask, files=tuple(files), cropped=cropped)
