"""Files a stage reads from outside the workdir, fingerprinted so a rerun notices changes.

Config values decide a stage's outputs, and so do the files some of them name. Each stage
record keeps (`paths`) a fingerprint of every file or folder named by the path-valued keys
it depends on (`PATH_KEYS`: the encoder to start from, the pseudo-label teacher, k-means
centroids, the noise folder of WavLM's utterance mixing), and the prepare stage's dataset
keeps its own record of the labels and audio it was read from (`papt_jax.data.sources`).
A rerun compares both before reusing a stage; a difference redoes the stage and everything
that read it, and the log says what changed.

A file's fingerprint is its size and modification time; a folder's covers every file in it
(name, size and time), so a converted checkpoint rewritten in place counts as changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from papt_jax.data import dataset_files
from papt_jax.experiment import settings

PATH_KEYS = ("model.init", "pseudo_labels.teacher", "pseudo_labels.centroids", "pretrain.noise_dir")
# Keys whose value is a path itself (the others are encoder specs such as 'converted:DIR').
_PLAIN_PATH_KEYS = ("pseudo_labels.centroids", "pretrain.noise_dir")
MISSING = "missing"


def named_path(key: str, value: Any) -> Path | None:
    """The file or folder a path-valued config value names, or None (a preset, the
    workdir's own encoder, or unset)."""
    if not value:
        return None
    if key in _PLAIN_PATH_KEYS:
        return Path(value).absolute()
    try:
        spec = settings.parse_encoder_spec(value)
    except ValueError:
        return None
    return Path(spec.value).absolute() if spec.kind in ("converted", "pytorch") else None


def fingerprint_path(path: Path) -> str:
    """Size and time of a file, or of every file under a folder, hashed; "missing" if absent."""
    digest = hashlib.sha256()
    if path.is_file():
        st = path.stat()
        digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    elif path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file = Path(root, name)
                st = file.stat()
                rel = file.relative_to(path).as_posix()
                digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    else:
        return MISSING
    return digest.hexdigest()[:16]


def path_fingerprints(values: dict[str, Any]) -> dict[str, str]:
    """{key: fingerprint} for the path-valued keys among a stage's deciding `values`."""
    out = {}
    for key in PATH_KEYS:
        path = named_path(key, values.get(key))
        if path is not None:
            out[key] = fingerprint_path(path)
    return out


def path_changes(recorded: dict[str, str] | None, values: dict[str, Any]) -> list[str]:
    """Which named files changed since `recorded` (a record's `paths`; None: a record from
    before paths were fingerprinted, which is taken as unchanged)."""
    if recorded is None:
        return []
    now = path_fingerprints(values)
    return [
        f"{key}={values[key]} {'is gone' if now[key] == MISSING else 'changed'}"
        for key in sorted(now)
        if key in recorded and recorded[key] != now[key]
    ]


def data_changes(dataset_dir: Path, verify_audio: str) -> list[str]:
    """What changed in the labels and audio a built dataset was read from (empty: nothing,
    or a dataset that has no record of them)."""
    if not (dataset_dir / dataset_files.BUILD_CONFIG_FILE).is_file():
        return []
    return dataset_files.source_changes(dataset_dir, verify_audio) or []
