"""MSP-Podcast reader: labels CSV, validation, split rules and the speaker index.

The same reader serves every MSP-Podcast release from v1.6 to v1.12 and the embedded
synthetic corpus, which uses the same layout:

    RELEASE/Audios/<FileName>                      audio (16 kHz mono wav as shipped)
    RELEASE/Labels/labels_consensus.csv            v1.9 on; v1.6-v1.8 spell it
                                                   labels_concensus.csv
    RELEASE/Partitions.txt, Speaker_ids.txt, ...   anything else is ignored

Every release has the header `FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set`
(`CSV_COLUMNS`).
Split names differ by release (`Validation` up to v1.8, `Development` from v1.9; `Test1`,
`Test2`, and from v1.11 `Test3`, whose labels may be withheld); they are mapped by
configuration (`CorpusConfig.splits`, `CorpusConfig.test_c_splits`). A configured split name
that matches no row is an error listing the names present.

test_c comes from a newer release, in one of two layouts:

* its own release folder (`CorpusConfig.new_corpus_dir`, e.g. v1.10 next to v1.6): labels
  found there by the same spelling rules, audio read from ITS `Audios/`;
* a labels file inside the same tree (`CorpusConfig.new_labels_file`, e.g. the synthetic
  corpus's `Labels_new/labels_consensus.csv`): audio read from the main `Audios/`.

Splits (Tran et al., Interspeech 2023):

* train, validation: the older release's splits, mapped by name (`CorpusConfig.splits`).
* test_a / test_b: the older release's test split, divided per speaker. A speaker's test
  utterances are sorted by file name and taken in that order into test_a until their summed
  duration reaches `test_a_seconds` (the utterance that crosses the threshold is included, so
  test_a holds at least `test_a_seconds` of that speaker unless the speaker has less in total);
  the remaining utterances form test_b. Each test utterance is in exactly one of the two.
* test_c: utterances of the newer release's test split(s) whose speakers are not in the older
  release's test split. They are unseen speakers: their `speaker_index` is -1. A warning names
  any of them that do appear in the older train or validation split.

Only rows of the splits a run uses are validated: rows of other splits (e.g. `Test3` rows with
withheld labels, or the newer release's `Train` rows) are counted and ignored, as are rows
whose speaker is "Unknown" (the count is logged). Bad rows of used splits raise one
`BadRowsError` listing them, or are skipped with counts per reason (`on_bad_rows="skip"`).
Audio files are probed once (header only) and the result is cached.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import tqdm

from papt_jax.data import audio as audio_lib
from papt_jax.errors import UserError

log = logging.getLogger(__name__)

LABEL_FILE_NAMES = ("labels_consensus.csv", "labels_concensus.csv")
# The labels file's header, identical in every release v1.6-v1.12.
CSV_COLUMNS = (
    "FileName",
    "EmoClass",
    "EmoAct",
    "EmoVal",
    "EmoDom",
    "SpkrID",
    "Gender",
    "Split_Set",
)
# Speaker id of rows whose speaker is not known; such rows are dropped.
UNKNOWN_SPEAKER = "Unknown"
# The emotion dimensions papt_jax predicts, and every dimension the corpus rates.
DIMENSIONS = ("arousal", "valence")
RATED_DIMENSIONS = (*DIMENSIONS, "dominance")
# Every rating lies on a 1..7 scale.
LABEL_MIN, LABEL_MAX = 1.0, 7.0
LABEL_CENTRE = (LABEL_MIN + LABEL_MAX) / 2
# The dataset's splits (see the module docstring for how each is built).
SPLIT_NAMES = ("train", "validation", "test_a", "test_b", "test_c")
# Rows listed in full in an error message; the rest are counted.
MAX_LISTED_ROWS = 20

# Logical name -> column of `CSV_COLUMNS` (the categorical EmoClass is not read).
DEFAULT_COLUMNS = {
    "file": "FileName",
    "arousal": "EmoAct",
    "valence": "EmoVal",
    "dominance": "EmoDom",
    "speaker": "SpkrID",
    "gender": "Gender",
    "split": "Split_Set",
}
DEFAULT_SPLITS = {
    "train": ("Train",),
    "validation": ("Development", "Validation"),
    "test": ("Test1",),
}
# Where users set each group of split names: the pipeline config key (the prepare CLI's flag
# has the same name without "data."), quoted in errors.
SPLIT_SETTINGS = {
    "train": "data.train_splits",
    "validation": "data.validation_splits",
    "test": "data.test_splits",
    "test_c": "data.new_test_splits",
}
LAYOUT_HINT = (
    "a release folder holds Audios/ and Labels/labels_consensus.csv "
    "(labels_concensus.csv up to v1.8)"
)


class CorpusError(UserError, ValueError):
    """The corpus directory, its labels file or the reader options cannot be used."""


class BadRowsError(CorpusError):
    """Rows of a labels file failed validation (`on_bad_rows="error"`).

    Attributes:
      bad_rows: every `BadRow` found.
    """

    def __init__(self, labels_file: Path, bad_rows: Sequence[BadRow]):
        self.bad_rows = list(bad_rows)
        listed = "\n".join(f"  {row}" for row in self.bad_rows[:MAX_LISTED_ROWS])
        more = len(self.bad_rows) - MAX_LISTED_ROWS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(self.bad_rows)} bad row(s) in {labels_file}:\n{listed}{tail}",
            hint="fix the rows, or set data.on_bad_rows=skip (--on_bad_rows=skip) to drop them",
        )


class BadAudioError(CorpusError):
    """Audio files failed their checks (`on_bad_audio="error"`)."""

    def __init__(self, problems: Sequence[SkippedAudio]):
        self.problems = list(problems)
        listed = "\n".join(
            f"  {p.key}: {p.reason} ({p.detail})" for p in problems[:MAX_LISTED_ROWS]
        )
        more = len(self.problems) - MAX_LISTED_ROWS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(self.problems)} bad audio file(s):\n{listed}{tail}",
            hint="fix the files, or set data.on_bad_audio=skip (--on_bad_audio=skip) to list "
            "them in skipped.json and go on",
        )


@dataclasses.dataclass(frozen=True)
class BadRow:
    """One rejected row: 1-based line number in the CSV (header is line 1), key and reason."""

    line: int
    key: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.key or '<no file name>'}): {self.reason}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class SkippedAudio:
    """One audio file left out of the corpus, with its `AudioError.reason` tag."""

    key: str
    path: str
    reason: str
    detail: str


def find_labels_file(release_dir: Path) -> Path:
    """`RELEASE/Labels/labels_consensus.csv` or (v1.6-v1.8) `labels_concensus.csv`.

    Raises:
      CorpusError: neither exists.
    """
    for name in LABEL_FILE_NAMES:
        path = Path(release_dir) / "Labels" / name
        if path.is_file():
            return path
    raise CorpusError(
        f"no labels file in {Path(release_dir) / 'Labels'} (looked for {LABEL_FILE_NAMES})",
        hint=LAYOUT_HINT,
    )


def check_release_dir(release_dir: Path, setting: str) -> None:
    """Raises a `CorpusError` naming `setting` unless `release_dir` has an `Audios/` folder.

    Args:
      release_dir: the folder to check.
      setting: the config key that named it (e.g. "data.corpus_dir"); the prepare CLI's flag
        has the same name without "data.".
    """
    release_dir = Path(release_dir)
    where = f"(set by {setting} / --{setting.removeprefix('data.')})"
    if not release_dir.exists():
        problem = "does not exist"
    elif not release_dir.is_dir():
        problem = "is not a folder"
    elif not any(release_dir.iterdir()):
        problem = "is empty"
    elif not (release_dir / "Audios").is_dir():
        problem = "has no Audios/ folder"
    else:
        return
    raise CorpusError(f"release folder {release_dir} {problem} {where}", hint=LAYOUT_HINT)


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Where the corpus is and how to read it.

    Attributes:
      corpus_dir: the (older) release folder, with `Audios/` and `Labels/`.
      labels_file: labels CSV of the older release; None finds
        `Labels/labels_consensus.csv` or `Labels/labels_concensus.csv`. Relative paths are
        relative to `corpus_dir`.
      new_corpus_dir: folder of a newer release (source of test_c), with its own `Audios/`
        and `Labels/`; test_c audio is read from its `Audios/`. None: see `new_labels_file`.
      new_labels_file: labels CSV of the newer release. With `new_corpus_dir` it overrides
        the label file found there (relative paths relative to `new_corpus_dir`); without,
        it is a labels file inside the same tree (relative to `corpus_dir`) whose audio is in
        `corpus_dir/Audios/`. Both None: no test_c.
      columns: logical name -> CSV column name; keys as in `DEFAULT_COLUMNS`.
      splits: "train" / "validation" / "test" -> the older release's `Split_Set` values.
      test_c_splits: the newer release's `Split_Set` values that count as its test set.
      test_a_seconds: per-speaker audio in test_a (see the module docstring).
      on_bad_rows: "error" raises `BadRowsError`; "skip" logs counts per reason and drops them.
      on_bad_audio: same choice for audio files failing their checks.
      sample_rate: expected sample rate (Hz).
      resample: accept other rates (they are resampled when read).
      channels: multi-channel policy, see `audio.read_audio`.
      duration_cache: JSON file caching audio headers; None disables caching. Never put it
        inside a read-only corpus; the builder places it next to its output.
    """

    corpus_dir: Path
    labels_file: Path | None = None
    new_labels_file: Path | None = None
    columns: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    splits: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_SPLITS)
    )
    test_c_splits: tuple[str, ...] = ("Test1",)
    test_a_seconds: float = 200.0
    on_bad_rows: Literal["error", "skip"] = "error"
    on_bad_audio: Literal["error", "skip"] = "skip"
    sample_rate: int = audio_lib.SAMPLE_RATE
    resample: bool = False
    channels: audio_lib.ChannelPolicy = "error"
    duration_cache: Path | None = None
    new_corpus_dir: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "corpus_dir", Path(self.corpus_dir))
        if self.new_corpus_dir is not None:
            object.__setattr__(self, "new_corpus_dir", Path(self.new_corpus_dir))
        missing = set(DEFAULT_COLUMNS) - set(self.columns)
        if missing:
            raise CorpusError(f"columns lacks {sorted(missing)}")
        missing = {"train", "validation", "test"} - set(self.splits)
        if missing:
            raise CorpusError(f"splits lacks {sorted(missing)}")
        for name, value in (("on_bad_rows", self.on_bad_rows), ("on_bad_audio", self.on_bad_audio)):
            if value not in ("error", "skip"):
                raise CorpusError(f"data.{name} must be 'error' or 'skip', got {value!r}")
        if self.channels not in audio_lib.CHANNEL_POLICIES:
            raise CorpusError(f"channels must be one of {audio_lib.CHANNEL_POLICIES}")
        if not self.test_a_seconds > 0:
            raise CorpusError(f"data.test_a_seconds must be > 0, got {self.test_a_seconds}")
        if self.has_new_release and not self.test_c_splits:
            raise CorpusError(
                f"{SPLIT_SETTINGS['test_c']} is empty although a newer release is configured"
            )

    @property
    def audio_dir(self) -> Path:
        return self.corpus_dir / "Audios"

    @property
    def has_new_release(self) -> bool:
        """Whether test_c is configured."""
        return self.new_corpus_dir is not None or self.new_labels_file is not None

    @property
    def new_audio_dir(self) -> Path:
        """Where test_c audio is read: the newer release's `Audios/`, or the main one."""
        return self.audio_dir if self.new_corpus_dir is None else self.new_corpus_dir / "Audios"

    def resolve_labels_file(self) -> Path:
        """The older release's labels CSV (either spelling when not given)."""
        if self.labels_file is None:
            return find_labels_file(self.corpus_dir)
        path = _under(self.corpus_dir, self.labels_file)
        if not path.is_file():
            raise CorpusError(f"data.labels_file: {path} does not exist")
        return path

    def resolve_new_labels_file(self) -> Path | None:
        """The newer release's labels CSV, or None when test_c is not configured."""
        if self.new_corpus_dir is not None:
            check_release_dir(self.new_corpus_dir, "data.new_corpus_dir")
            if self.new_labels_file is None:
                return find_labels_file(self.new_corpus_dir)
            path = _under(self.new_corpus_dir, self.new_labels_file)
        elif self.new_labels_file is not None:
            path = _under(self.corpus_dir, self.new_labels_file)
            _refuse_foreign_release(path, self.corpus_dir)
        else:
            return None
        if not path.is_file():
            raise CorpusError(f"data.new_labels_file: {path} does not exist")
        return path


def _under(root: Path, path: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(root) / path


def _refuse_foreign_release(labels_file: Path, corpus_dir: Path) -> None:
    """Refuses a `new_labels_file` that lies in another release folder with its own audio.

    With `new_labels_file` alone, test_c audio is read from the main corpus, where a newer
    release's new files are not; every test_c row would fail as missing audio.
    """
    release = labels_file.parent.parent
    inside = labels_file.resolve().is_relative_to(Path(corpus_dir).resolve())
    if not inside and (release / "Audios").is_dir():
        raise CorpusError(
            f"data.new_labels_file={str(labels_file)!r} belongs to another release folder "
            f"({release}) with its own Audios/, but new_labels_file alone reads test_c audio "
            f"from {Path(corpus_dir) / 'Audios'}",
            hint=f"set data.new_corpus_dir={release} (--new_corpus_dir) instead: its labels "
            "and its audio are then both used",
        )


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled utterance.

    Attributes:
      key: the file name (unique within a release).
      path: absolute audio path.
      speaker_id: the corpus speaker id (string).
      speaker_index: position in the speaker index; -1 for test_c (unseen) speakers.
      arousal, valence, dominance: consensus labels in [1, 7].
      gender: as written in the CSV.
      duration: seconds, from the audio header.
    """

    key: str
    path: Path
    speaker_id: str
    speaker_index: int
    arousal: float
    valence: float
    dominance: float
    gender: str
    duration: float


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The corpus split as in the paper.

    Attributes:
      splits: split name -> utterances (test_c only when a newer release is configured).
      speakers: the speaker index: sorted ids of train + validation + test speakers.
      skipped_audio: audio files left out by the header checks.
    """

    splits: Mapping[str, list[Utterance]]
    speakers: tuple[str, ...]
    skipped_audio: tuple[SkippedAudio, ...] = ()

    def speaker_to_index(self) -> dict[str, int]:
        return {speaker: i for i, speaker in enumerate(self.speakers)}


@dataclasses.dataclass(frozen=True)
class _Row:
    """A validated CSV row, before audio probing; `path` is its audio file."""

    key: str
    path: Path
    speaker_id: str
    arousal: float
    valence: float
    dominance: float
    gender: str
    split: str


# --------------------------------------------------------------------------- CSV rows


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


def _check_row(line: int, raw: Mapping[str, str], audio_dir: Path) -> _Row | BadRow:
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
    return _Row(
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
) -> tuple[list[_Row], list[BadRow]]:
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


def _apply_row_policy(labels_file: Path, bad: Sequence[BadRow], policy: str) -> None:
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
) -> list[_Row]:
    """Reads a labels CSV and validates the rows of the wanted splits.

    Args:
      labels_file: the CSV.
      config: reader options (columns, `on_bad_rows`).
      wanted: group -> `Split_Set` values, as for `check_split_names`.
      audio_dir: where this release's audio is.

    Returns:
      Good rows of the wanted splits with known speakers, in file order.
    """
    raw = read_label_rows(labels_file, config.columns)
    check_split_names(labels_file, raw, wanted)
    used = select_rows(labels_file, raw, [name for names in wanted.values() for name in names])
    good, bad = validate_rows(used, audio_dir, [r["file"] for _, r in raw])
    _apply_row_policy(labels_file, bad, config.on_bad_rows)
    return good


# --------------------------------------------------------------------------- audio headers


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
    rows: Sequence[_Row], config: CorpusConfig, cache: DurationCache
) -> tuple[dict[Path, float], list[SkippedAudio]]:
    """Durations (seconds, by audio path) of the rows' audio, and the files failing checks."""
    durations, problems, seen = {}, [], set()
    # disable=None: a bar on terminals only (probing ~100k MSP-Podcast files takes minutes).
    for row in tqdm.tqdm(rows, desc="probing audio", unit="file", disable=None, leave=False):
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


def _apply_audio_policy(problems: Sequence[SkippedAudio], policy: str) -> None:
    if not problems:
        return
    if policy == "error":
        raise BadAudioError(problems)
    counts = collections.Counter(p.reason for p in problems)
    log.warning("skipped %d bad audio file(s): %s", len(problems), dict(sorted(counts.items())))


# --------------------------------------------------------------------------- splits


def split_test_a_b(
    rows: Sequence[_Row], durations: Mapping[Path, float], test_a_seconds: float
) -> tuple[list[_Row], list[_Row]]:
    """Per speaker: file-name order, utterances into test_a until `test_a_seconds` is reached.

    Args:
      rows: the test rows.
      durations: seconds per audio path (`_Row.path`).
      test_a_seconds: per-speaker threshold.

    Returns:
      (test_a, test_b), each sorted by (speaker, file name).
    """
    by_speaker: dict[str, list[_Row]] = collections.defaultdict(list)
    for row in rows:
        by_speaker[row.speaker_id].append(row)
    test_a, test_b = [], []
    short_speakers = 0
    for speaker in sorted(by_speaker, key=speaker_sort_key):
        total = 0.0
        for row in sorted(by_speaker[speaker], key=lambda r: r.key):
            if total < test_a_seconds:
                test_a.append(row)
                total += durations[row.path]
            else:
                test_b.append(row)
        short_speakers += total < test_a_seconds
    if short_speakers:
        log.warning(
            "%d test speaker(s) have less than %.1f s of audio: all of it is in test_a",
            short_speakers,
            test_a_seconds,
        )
    return test_a, test_b


def speaker_sort_key(speaker_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order first, then any other ids as strings."""
    if speaker_id.isdigit():
        return (0, int(speaker_id), speaker_id)
    return (1, 0, speaker_id)


def build_speaker_index(splits: Mapping[str, Sequence[_Row]]) -> tuple[str, ...]:
    """Sorted distinct speaker ids of every split used in pre-training (not test_c)."""
    speakers = {row.speaker_id for name, rows in splits.items() if name != "test_c" for row in rows}
    return tuple(sorted(speakers, key=speaker_sort_key))


def select_test_c(
    new_rows: Sequence[_Row], old_splits: Mapping[str, Sequence[_Row]], test_c_splits: Sequence[str]
) -> list[_Row]:
    """Newer-release test rows of speakers absent from the older release's test split.

    Args:
      new_rows: the newer release's rows.
      old_splits: the older release's rows by group; the test speakers are those of "test"
        (or, when absent, "test_a" + "test_b"), the seen ones those of "train" + "validation".
      test_c_splits: the newer release's `Split_Set` values that form its test set.
    """
    test_groups = ("test",) if "test" in old_splits else ("test_a", "test_b")
    old_test = {row.speaker_id for name in test_groups for row in old_splits[name]}
    old_trainval = {row.speaker_id for name in ("train", "validation") for row in old_splits[name]}
    rows = [r for r in new_rows if r.split in test_c_splits and r.speaker_id not in old_test]
    if not rows:
        log.warning(
            "test_c is empty: every speaker of the new release's splits %s is in the older "
            "release's test split",
            tuple(test_c_splits),
        )
    leaked = sorted({r.speaker_id for r in rows} & old_trainval, key=speaker_sort_key)
    if leaked:
        log.warning(
            "%d test_c speaker(s) also appear in the older train/validation split, so they are "
            "not unseen: %s",
            len(leaked),
            leaked[:MAX_LISTED_ROWS],
        )
    return sorted(rows, key=lambda r: (speaker_sort_key(r.speaker_id), r.key))


def _assign_old_splits(rows: Sequence[_Row], config: CorpusConfig) -> dict[str, list[_Row]]:
    """train / validation / test rows of the older release by `Split_Set` name."""
    by_name = {value: split for split, values in config.splits.items() for value in values}
    assigned: dict[str, list[_Row]] = {"train": [], "validation": [], "test": []}
    for row in rows:
        assigned[by_name[row.split]].append(row)
    return assigned


def _to_utterances(
    rows: Sequence[_Row], durations: Mapping[Path, float], index: Mapping
) -> list[Utterance]:
    return [
        Utterance(
            key=row.key,
            path=row.path.resolve(),
            speaker_id=row.speaker_id,
            speaker_index=index.get(row.speaker_id, -1),
            arousal=row.arousal,
            valence=row.valence,
            dominance=row.dominance,
            gender=row.gender,
            duration=durations[row.path],
        )
        for row in rows
    ]


def _old_wanted(config: CorpusConfig) -> dict[str, tuple[str, ...]]:
    return {group: tuple(config.splits[group]) for group in ("train", "validation", "test")}


def load_corpus(config: CorpusConfig) -> Corpus:
    """Reads, validates and splits the corpus described by `config`.

    Raises:
      CorpusError: missing folder, labels file or column; a configured split name matching no
        row; `BadRowsError` / `BadAudioError` under the "error" policies.
    """
    check_release_dir(config.corpus_dir, "data.corpus_dir")
    labels_file = config.resolve_labels_file()
    new_labels_file = config.resolve_new_labels_file()
    old_rows = load_rows(labels_file, config, _old_wanted(config), config.audio_dir)
    new_rows = []
    if new_labels_file is not None:
        log.info("test_c: labels %s, audio %s", new_labels_file, config.new_audio_dir)
        wanted = {"test_c": tuple(config.test_c_splits)}
        new_rows = load_rows(new_labels_file, config, wanted, config.new_audio_dir)
    old = _assign_old_splits(old_rows, config)

    cache = DurationCache(config.duration_cache)
    try:
        durations, problems = probe_rows([*old_rows, *new_rows], config, cache)
    finally:
        cache.save()
    _apply_audio_policy(problems, config.on_bad_audio)

    def good(rows):
        return [r for r in rows if r.path in durations]

    rows: dict[str, list[_Row]] = {
        "train": sorted(good(old["train"]), key=lambda r: r.key),
        "validation": sorted(good(old["validation"]), key=lambda r: r.key),
    }
    rows["test_a"], rows["test_b"] = split_test_a_b(
        good(old["test"]), durations, config.test_a_seconds
    )
    if new_labels_file is not None:
        # The older test set is that of the labels file, even for speakers whose audio failed.
        rows["test_c"] = select_test_c(good(new_rows), old, config.test_c_splits)
    else:
        log.info("no newer release configured: test_c is not built")
    speakers = build_speaker_index(rows)
    index = {speaker: i for i, speaker in enumerate(speakers)}
    splits = {}
    for name, split_rows in rows.items():
        # test_c speakers are unseen by construction, even if an id also occurs in train.
        split_index = {} if name == "test_c" else index
        splits[name] = _to_utterances(split_rows, durations, split_index)
    for name, utts in splits.items():
        log.info("%s: %d utterances, %.1f h", name, len(utts), sum(u.duration for u in utts) / 3600)
    return Corpus(splits=splits, speakers=speakers, skipped_audio=tuple(problems))


def write_speakers(corpus: Corpus, path: Path) -> None:
    """Writes the speaker index as JSON: {"speakers": [ids in index order]}."""
    Path(path).write_text(json.dumps({"speakers": list(corpus.speakers)}, indent=1))


def read_speakers(path: Path) -> tuple[str, ...]:
    """Reads a speaker index written by `write_speakers`."""
    return tuple(json.loads(Path(path).read_text())["speakers"])
