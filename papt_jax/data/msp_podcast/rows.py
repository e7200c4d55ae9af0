"""Labels CSV rows: reading, checking split names, choosing the rows a run uses, validating
them (bad rows listed with their line numbers, or skipped by policy)."""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from papt_jax.data.msp_podcast.schema import (
    LABEL_MAX,
    LABEL_MIN,
    RATED_DIMENSIONS,
    SPLIT_SETTINGS,
    UNKNOWN_SPEAKER,
    BadRow,
    BadRowsError,
    CorpusConfig,
    CorpusError,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LabelRow:
    """A validated CSV row, before audio probing; `path` is its audio file."""

    key: str
    path: Path
    speaker_id: str
    arousal: float
    valence: float
    dominance: float
    gender: str
    split: str


def read_label_rows(path: Path, columns: Mapping[str, str]) -> list[tuple[int, dict[str, str]]]:
    """Reads a labels CSV into (line number, logical-name -> raw value) pairs.

    Raises:
      CorpusError: a required column is missing from the header.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in columns.values() if c not in header]
        if missing:
            raise CorpusError(f"{path} lacks column(s) {missing}; header is {header}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            rows.append(
                (line, {name: (raw.get(col) or "").strip() for name, col in columns.items()})
            )
    return rows


def check_split_names(
    labels_file: Path,
    rows: Sequence[tuple[int, Mapping[str, str]]],
    wanted: Mapping[str, Sequence[str]],
) -> None:
    """Every configured group of split names must match at least one row.

    Args:
      labels_file: for the message.
      rows: as from `read_label_rows`.
      wanted: group ("train", "validation", "test" or "test_c") -> `Split_Set` values; an
        empty tuple means the group is deliberately unused.

    Raises:
      CorpusError: a group none of whose names occurs, listing the names present.
    """
    present = collections.Counter(raw["split"] for _, raw in rows if raw["split"])
    for group, names in wanted.items():
        if not names or any(name in present for name in names):
            continue
        setting = SPLIT_SETTINGS[group]
        listed = ", ".join(sorted(present)) or "none"
        raise CorpusError(
            f"{setting}={','.join(names)!r} matches no row of {labels_file}; "
            f"Split_Set values present: {listed}",
            hint=f"set {setting} (--{setting.removeprefix('data.')}) to one or more of them",
        )


def select_rows(
    labels_file: Path, rows: Sequence[tuple[int, Mapping[str, str]]], split_names: Iterable[str]
) -> list[tuple[int, Mapping[str, str]]]:
    """Rows of the used splits, minus rows whose speaker is "Unknown" (both counts logged)."""
    used_names = set(split_names)
    kept, unused, unknown = [], collections.Counter(), 0
    for line, raw in rows:
        if raw["split"] not in used_names:
            unused[raw["split"] or "<empty>"] += 1
        elif raw["speaker"] == UNKNOWN_SPEAKER:
            unknown += 1
        else:
            kept.append((line, raw))
    if unused:
        log.info(
            "%s: rows of splits this run does not use (not validated, not loaded): %s",
            labels_file,
            dict(sorted(unused.items())),
        )
    if unused["<empty>"]:
        log.warning("%s: %d row(s) have no Split_Set value", labels_file, unused["<empty>"])
    if unknown:
        log.info("%s: dropped %d utterance(s) of speaker %r", labels_file, unknown, UNKNOWN_SPEAKER)
    return kept


def _parse_label(value: str) -> float | None:
    """A label in [1, 7], or None if not a number, NaN or out of range."""
    try:
        label = float(value)
    except ValueError:
        return None
    if math.isnan(label) or not LABEL_MIN <= label <= LABEL_MAX:
        return None
    return label


def _check_row(line: int, raw: Mapping[str, str], audio_dir: Path) -> LabelRow | BadRow:
    """Validates one row's values (file existence is checked separately)."""
    key = raw["file"]
    for name in ("file", "speaker"):
        if not raw[name]:
            return BadRow(line, key, "missing_value", f"empty {name!r}")
    labels = {}
    for name in RATED_DIMENSIONS:
        if not raw[name]:
            return BadRow(line, key, "missing_value", f"empty {name!r} (labels withheld?)")
        labels[name] = _parse_label(raw[name])
        if labels[name] is None:
            return BadRow(line, key, "bad_label", f"{name}={raw[name]!r} is not a number in [1, 7]")
    return LabelRow(
        key=key,
        path=audio_dir / key,
        speaker_id=raw["speaker"],
        arousal=labels["arousal"],
        valence=labels["valence"],
        dominance=labels["dominance"],
        gender=raw["gender"],
        split=raw["split"],
    )


def validate_rows(
    rows: Iterable[tuple[int, Mapping[str, str]]],
    audio_dir: Path,
    all_file_names: Iterable[str] | None = None,
) -> tuple[list[LabelRow], list[BadRow]]:
    """Splits rows into good and bad ones.

    Args:
      rows: the rows to check, as from `read_label_rows`.
      audio_dir: where their audio must be.
      all_file_names: file names of every row of the labels file (default: those of `rows`);
        a checked row is a duplicate when its file name occurs more than once there.

    Bad reasons: "missing_value" (including labels left empty, as for withheld test labels),
    "bad_label" (not a number, NaN or outside [1, 7]), "duplicate_file" (every occurrence of
    a repeated file name is bad, since which one is right is unknowable) and "missing_audio".
    """
    rows = list(rows)
    names = [raw["file"] for _, raw in rows] if all_file_names is None else all_file_names
    counts = collections.Counter(names)
    good, bad = [], []
    for line, raw in rows:
        checked = _check_row(line, raw, audio_dir)
        if isinstance(checked, BadRow):
            bad.append(checked)
        elif counts[checked.key] > 1:
            bad.append(BadRow(line, checked.key, "duplicate_file", f"{counts[checked.key]} rows"))
        elif not checked.path.is_file():
            bad.append(BadRow(line, checked.key, "missing_audio", f"{checked.path}"))
        else:
            good.append(checked)
    return good, bad


def apply_row_policy(labels_file: Path, bad: Sequence[BadRow], policy: str) -> None:
    if not bad:
        return
    if policy == "error":
        raise BadRowsError(labels_file, bad)
    counts = collections.Counter(row.reason for row in bad)
    log.warning(
        "%s: skipped %d bad row(s): %s", labels_file, len(bad), dict(sorted(counts.items()))
    )


def load_rows(
    labels_file: Path,
    config: CorpusConfig,
    wanted: Mapping[str, Sequence[str]],
    audio_dir: Path,
    missing_audio: list[str] | None = None,
) -> list[LabelRow]:
    """Reads a labels CSV and validates the rows of the wanted splits.

    Args:
      labels_file: the CSV.
      config: reader options (columns, `on_bad_rows`).
      wanted: group -> `Split_Set` values, as for `check_split_names`.
      audio_dir: where this release's audio is.
      missing_audio: if given, the paths of skipped rows' audio files that do not exist
        are appended (a dataset's sources record them: their arrival changes the data).

    Returns:
      Good rows of the wanted splits with known speakers, in file order.
    """
    raw = read_label_rows(labels_file, config.columns)
    check_split_names(labels_file, raw, wanted)
    used = select_rows(labels_file, raw, [name for names in wanted.values() for name in names])
    good, bad = validate_rows(used, audio_dir, [r["file"] for _, r in raw])
    apply_row_policy(labels_file, bad, config.on_bad_rows)
    if missing_audio is not None:
        missing_audio += [
            str(Path(row.detail).absolute()) for row in bad if row.reason == "missing_audio"
        ]
    return good
