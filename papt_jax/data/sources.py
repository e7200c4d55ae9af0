"""What a built dataset was read from, recorded when it is built and compared before reuse.

`DATASET_DIR/sources.json` holds:

* the SHA-256 of every labels file read;
* every audio file the labels named: size and modification time (`st_mtime_ns`), or with
  `content=True` (`data.verify_audio=content`) also the SHA-256 of its bytes; files the
  labels named that did not exist are recorded as absent, so their arrival is a change too.

`changes` compares the record with the files as they are now and says what differs
("labels file ... changed", "3 audio file(s) replaced", "1 deleted", "2 added"). The default
check stats every file: about a second for 150 000 files (benchmarks/sources.py); a file
rewritten with its old size and time restored is seen only by the content check, which
reads every byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SOURCES_FILE = "sources.json"
FORMAT = "papt_jax dataset sources 1"
CONTENT, STAT = "content", "stat"
_CHUNK = 1 << 20
_EXAMPLES = 3


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _audio_entry(path: str, content: bool) -> list | None:
    """[size, mtime_ns] (+ sha256 with `content`), or None when the file is absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    entry = [st.st_size, st.st_mtime_ns]
    if content:
        entry.append(sha256_file(path))
    return entry


def scan(
    labels_files: Iterable[str | os.PathLike],
    audio_files: Iterable[str | os.PathLike],
    content: bool = False,
) -> dict[str, Any]:
    """The record of `labels_files` and `audio_files` as they are now (see module docstring).

    Args:
      labels_files: the labels CSVs read.
      audio_files: every audio file the labels named (present or not), absolute paths.
      content: also hash every audio file.
    """
    return {
        "format": FORMAT,
        "labels": {str(Path(p).absolute()): sha256_file(p) for p in labels_files},
        "audio_check": CONTENT if content else STAT,
        "audio": {
            str(p): _audio_entry(str(p), content) for p in sorted({str(p) for p in audio_files})
        },
    }


def write(dataset_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    path = Path(dataset_dir) / SOURCES_FILE
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def read(dataset_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record beside a dataset, or None (built before sources were recorded, or damaged)."""
    path = Path(dataset_dir) / SOURCES_FILE
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def _examples(paths: list[str]) -> str:
    shown = ", ".join(paths[:_EXAMPLES])
    return shown + (", ..." if len(paths) > _EXAMPLES else "")


def changes(record: dict[str, Any], content: bool = False) -> list[str]:
    """What differs between `record` and the files now; empty when nothing does.

    Args:
      record: from `scan` (as written by the build).
      content: compare the audio bytes (SHA-256) too. A record made without hashes is
        compared by size and time only.
    """
    out = []
    for path, digest in sorted(record["labels"].items()):
        if not os.path.isfile(path):
            out.append(f"labels file {path} was deleted")
        elif sha256_file(path) != digest:
            out.append(f"labels file {path} changed")
    hashed = content and record.get("audio_check") == CONTENT
    replaced, deleted, added = [], [], []
    for path, entry in record["audio"].items():
        now = _audio_entry(path, False)
        if entry is None:
            if now is not None:
                added.append(path)
        elif now is None:
            deleted.append(path)
        elif now[:2] != entry[:2] or (hashed and sha256_file(path) != entry[2]):
            replaced.append(path)
    for count, what in ((replaced, "replaced"), (deleted, "deleted"), (added, "added")):
        if count:
            out.append(f"{len(count)} audio file(s) {what} ({_examples(count)})")
    return out
