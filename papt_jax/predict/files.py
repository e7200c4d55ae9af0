"""Finding audio files under user paths and reading them for prediction.

Paths may be files or folders. Folders are searched recursively for files whose extension is
an audio format libsndfile reads (`data.audio.audio_extensions()`, limited to the formats
this libsndfile build has); a file named explicitly is tried whatever its extension. Reading
goes through `papt_jax.data.audio.read_audio` with resampling on and channels averaged, so a file is
accepted or refused for the same reasons as in the dataset (`AudioError.reason`);
`read_chunks` checks files the same way in blocks and hands them on as `FileRecording`s that
read one window at a time (`stream.py`), so memory does not grow with a recording's length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from papt_jax.data.audio import (
    SAMPLE_RATE,
    AudioError,
    audio_extensions,
    probe_audio,
    read_audio,
)
from papt_jax.errors import UserError
from papt_jax.predict.stream import FileRecording, open_recording


class NoAudioError(UserError, FileNotFoundError):
    """A path that does not exist, or paths that hold no audio file at all."""


@dataclasses.dataclass(frozen=True)
class Found:
    """The audio files under the user's paths.

    Attributes:
      files: audio files, in the order given (folders: sorted), each once.
      ignored: files in folders skipped for their extension.
    """

    files: tuple[Path, ...]
    ignored: tuple[Path, ...]


def split_paths(text: str) -> list[str]:
    """'a.wav, dir/' -> ['a.wav', 'dir/'] (empty entries dropped)."""
    return [p.strip() for p in str(text).split(",") if p.strip()]


def find_audio(paths: Iterable[str | Path], what: str = "--audio") -> Found:
    """Audio files under `paths` (files, or folders searched recursively).

    Raises:
      NoAudioError: a path does not exist, or there is no audio file at all.
    """
    files, ignored, seen = [], [], set()
    paths = [Path(p) for p in paths]
    if not paths:
        raise NoAudioError(f"{what}: no path given")
    extensions = audio_extensions()
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower().lstrip(".") in extensions:
                    _add(child, files, seen)
                elif not child.name.startswith("."):
                    ignored.append(child)
        elif path.is_file():
            _add(path, files, seen)
        else:
            raise NoAudioError(f"{what}: {path} does not exist")
    if not files:
        shown = ", ".join(str(p) for p in paths)
        raise NoAudioError(
            f"{what}: no audio file in {shown}",
            hint=f"audio files have one of the extensions {', '.join(sorted(extensions))}",
        )
    return Found(tuple(files), tuple(ignored))


def _add(path: Path, files: list[Path], seen: set[Path]) -> None:
    key = path.resolve()
    if key not in seen:
        seen.add(key)
        files.append(path)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A file that was not used, and why."""

    file: Path
    reason: str
    detail: str


def probe_seconds(path: Path) -> float:
    """Duration from the header (0 when it cannot be read: reading will name the problem)."""
    try:
        return probe_audio(path).duration
    except AudioError:
        return 0.0


def read_for_model(path: Path) -> np.ndarray:
    """(samples,) float32 at 16 kHz, mono, checked as the data path checks dataset audio.

    Raises:
      AudioError: a subclass with the reason (corrupt, truncated, too_short, ...).
    """
    return read_audio(path, SAMPLE_RATE, resample=True, channels="mean", dtype="float32")


def read_chunks(
    files: Iterable[Path],
    max_seconds: float = 600.0,
    max_files: int = 256,
    check: Callable[[FileRecording, Path], None] | None = None,
) -> Iterator[tuple[list[Path], list[FileRecording], list[Problem]]]:
    """Checks `files` in chunks of at most `max_seconds` of audio or `max_files` files.

    Args:
      files: the audio files.
      max_seconds, max_files: chunk size.
      check: called with each recording (its `len` is its 16 kHz length; nothing is read)
        and its path; an `AudioError` it raises refuses the file like a reading problem
        (e.g. `Predictor.check_duration`).

    Yields:
      (paths accepted, their recordings (read window by window when predicted), problems met
      in this chunk).
    """
    paths, waves, problems, seconds = [], [], [], 0.0
    for path in files:
        try:
            wave = open_recording(path)
            if check is not None:
                check(wave, path)
        except AudioError as e:
            problems.append(Problem(path, e.reason, e.detail))
            continue
        except OSError as e:  # permissions and the like: the file, not the program
            problems.append(Problem(path, "unreadable", str(e)))
            continue
        paths.append(path)
        waves.append(wave)
        seconds += len(wave) / SAMPLE_RATE
        if seconds >= max_seconds or len(paths) >= max_files:
            yield paths, waves, problems
            paths, waves, problems, seconds = [], [], [], 0.0
    if paths or problems:
        yield paths, waves, problems
