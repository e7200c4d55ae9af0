"""Audio headers of the used rows, probed once and cached (`DurationCache`), with named
problems for files that cannot be used."""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from papt_jax import progress
from papt_jax.data import audio as audio_lib
from papt_jax.data.msp_podcast.rows import LabelRow
from papt_jax.data.msp_podcast.schema import BadAudioError, CorpusConfig, SkippedAudio

log = logging.getLogger(__name__)


class DurationCache:
    """Audio headers cached in a JSON file, keyed by absolute path and checked by size + mtime.

    A missing or unreadable cache file (or one in another format) starts empty; the cache is
    rewritten atomically by `save`. One cache serves several releases' `Audios/` folders.
    """

    FORMAT = 2

    def __init__(self, path: Path | None):
        self.path = None if path is None else Path(path)
        self._entries: dict[str, dict] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                log.warning("ignoring unreadable duration cache %s (%s)", self.path, err)
                return
            if isinstance(data, dict) and data.get("format") == self.FORMAT:
                self._entries = data.get("files", {})

    def probe(self, path: Path) -> audio_lib.AudioInfo:
        """Header of `path`, from the cache when its size and mtime are unchanged."""
        key = str(Path(path).resolve())
        stat = os.stat(path)
        entry = self._entries.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return audio_lib.AudioInfo(entry["frames"], entry["sample_rate"], entry["channels"])
        info = audio_lib.probe_audio(path)
        self._entries[key] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "frames": info.frames,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
        }
        self._dirty = True
        return info

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": self.FORMAT, "files": self._entries}))
        os.replace(tmp, self.path)
        self._dirty = False


def probe_rows(
    rows: Sequence[LabelRow], config: CorpusConfig, cache: DurationCache
) -> tuple[dict[Path, float], list[SkippedAudio]]:
    """Durations (seconds, by audio path) of the rows' audio, and the files failing checks."""
    durations, problems, seen = {}, [], set()
    # disable=None: a bar on terminals only (probing ~100k MSP-Podcast files takes minutes).
    for row in progress.bar(rows, desc="probing audio", unit="files"):
        if row.path in seen:
            continue
        seen.add(row.path)
        try:
            info = cache.probe(row.path)
            audio_lib.check_audio_info(
                info, row.path, config.sample_rate, config.resample, config.channels
            )
        except audio_lib.AudioError as err:
            problems.append(SkippedAudio(row.key, str(row.path), err.reason, err.detail))
            continue
        durations[row.path] = info.duration
    return durations, problems


def apply_audio_policy(problems: Sequence[SkippedAudio], policy: str) -> None:
    if not problems:
        return
    if policy == "error":
        raise BadAudioError(problems)
    counts = collections.Counter(p.reason for p in problems)
    log.warning("skipped %d bad audio file(s): %s", len(problems), dict(sorted(counts.items())))
