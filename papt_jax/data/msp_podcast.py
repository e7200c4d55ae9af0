"""MSP-Podcast reader: labels CSV, validation, split rules and the speaker index.

The same reader serves the real corpus and the embedded synthetic one, which uses the same
layout:

    CORPUS/Audios/<FileName>                       16 kHz mono wav
    CORPUS/Labels/labels_consensus.csv             (older releases: labels_concensus.csv)
    CORPUS/Labels_new/labels_consensus.csv         optional newer release (for test-c)

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

Rows are validated before use; bad rows raise one `BadRowsError` listing them, or are skipped
with counts per reason (`on_bad_rows="skip"`). Rows whose speaker is "Unknown" are dropped
(the count is logged). Audio files are probed once (header only) and the result is cached.
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

log = logging.getLogger(__name__)

LABEL_FILE_NAMES = ("labels_consensus.csv", "labels_concensus.csv")
UNKNOWN_SPEAKER = "Unknown"
LABEL_RANGE = (1.0, 7.0)
SPLIT_NAMES = ("train", "validation", "test_a", "test_b", "test_c")
# Rows listed in full in an error message; the rest are counted.
MAX_LISTED_ROWS = 20

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


class CorpusError(ValueError):
    """The corpus directory or its labels file cannot be used at all."""


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
            f"{len(self.bad_rows)} bad row(s) in {labels_file} "
            f"(pass on_bad_rows='skip' to drop them):\n{listed}{tail}"
        )


class BadAudioError(CorpusError):
    """Audio files failed their header checks (`on_bad_audio="error"`)."""

    def __init__(self, problems: Sequence[SkippedAudio]):
        self.problems = list(problems)
        listed = "\n".join(
            f"  {p.key}: {p.reason} ({p.detail})" for p in problems[:MAX_LISTED_ROWS]
        )
        more = len(self.problems) - MAX_LISTED_ROWS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} bad audio file(s):\n{listed}{tail}")


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


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Where the corpus is and how to read it.

    Attributes:
      corpus_dir: directory with `Audios/` and `Labels/`.
      labels_file: labels CSV of the (older) release; None finds
        `Labels/labels_consensus.csv` or `Labels/labels_concensus.csv`. Relative paths are
        relative to `corpus_dir`.
      new_labels_file: labels CSV of a newer release sharing `Audios/` (source of test_c);
        None means no test_c. Relative paths are relative to `corpus_dir`.
      columns: logical name -> CSV column name; keys as in `DEFAULT_COLUMNS`.
      splits: "train" / "validation" / "test" -> the older release's `Split_Set` values.
      test_c_splits: the newer release's `Split_Set` values that count as its test set.
      test_a_seconds: per-speaker audio in test_a (see the module docstring).
      on_bad_rows: "error" raises `BadRowsError`; "skip" logs counts per reason and drops them.
      on_bad_audio: same choice for audio files failing their header checks.
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
    sample_rate: int = 16000
    resample: bool = False
    channels: audio_lib.ChannelPolicy = "error"
    duration_cache: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "corpus_dir", Path(self.corpus_dir))
        missing = set(DEFAULT_COLUMNS) - set(self.columns)
        if missing:
            raise ValueError(f"columns lacks {sorted(missing)}")
        missing = {"train", "validation", "test"} - set(self.splits)
        if missing:
            raise ValueError(f"splits lacks {sorted(missing)}")
        for name, value in (("on_bad_rows", self.on_bad_rows), ("on_bad_audio", self.on_bad_audio)):
            if value not in ("error", "skip"):
                raise ValueError(f"{name} must be 'error' or 'skip', got {value!r}")
        if self.channels not in audio_lib.CHANNEL_POLICIES:
            raise ValueError(f"channels must be one of {audio_lib.CHANNEL_POLICIES}")
        if not self.test_a_seconds > 0:
            raise ValueError(f"test_a_seconds must be > 0, got {self.test_a_seconds}")

    @property
    def audio_dir(self) -> Path:
        return self.corpus_dir / "Audios"

    def resolve_labels_file(self) -> Path:
        """The older release's labels CSV (either spelling when not given)."""
        if self.labels_file is not None:
            path = self._under_corpus(self.labels_file)
            if not path.is_file():
                raise CorpusError(f"labels file {path} does not exist")
            return path
        for name in LABEL_FILE_NAMES:
            path = self.corpus_dir / "Labels" / name
            if path.is_file():
                return path
        raise CorpusError(
            f"no labels file in {self.corpus_dir / 'Labels'} (looked for {LABEL_FILE_NAMES})"
        )

    def resolve_new_labels_file(self) -> Path | None:
        """The newer release's labels CSV, or None when test_c is not configured."""
        if self.new_labels_file is None:
            return None
        path = self._under_corpus(self.new_labels_file)
        if not path.is_file():
            raise CorpusError(f"new-release labels file {path} does not exist")
        return path

    def _under_corpus(self, path: Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.corpus_dir / path


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
    """A validated CSV row, before audio probing."""

    key: str
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


def _parse_label(value: str) -> float | None:
    """A label in [1, 7], or None if missing, not a number, NaN or out of range."""
    try:
        label = float(value)
    except ValueError:
        return None
    if math.isnan(label) or not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
        return None
    return label


def _check_row(line: int, raw: Mapping[str, str]) -> _Row | BadRow:
    """Validates one row's values (file existence is checked separately)."""
    key = raw["file"]
    for name in ("file", "speaker", "split"):
        if not raw[name]:
            return BadRow(line, key, "missing_value", f"empty {name!r}")
    labels = {}
    for name in ("arousal", "valence", "dominance"):
        labels[name] = _parse_label(raw[name])
        if labels[name] is None:
            return BadRow(line, key, "bad_label", f"{name}={raw[name]!r} is not a number in [1, 7]")
    return _Row(
        key=key,
        speaker_id=raw["speaker"],
        arousal=labels["arousal"],
        valence=labels["valence"],
        dominance=labels["dominance"],
        gender=raw["gender"],
        split=raw["split"],
    )


def validate_rows(
    rows: Iterable[tuple[int, Mapping[str, str]]], audio_dir: Path
) -> tuple[list[_Row], list[BadRow]]:
    """Splits rows into good and bad ones.

    Bad reasons: "missing_value", "bad_label" (not a number, NaN or outside [1, 7]),
    "duplicate_file" (every occurrence of a repeated file name is bad, since which one is
    right is unknowable) and "missing_audio".
    """
    rows = list(rows)
    counts = collections.Counter(raw["file"] for _, raw in rows)
    good, bad = [], []
    for line, raw in rows:
        checked = _check_row(line, raw)
        if isinstance(checked, BadRow):
            bad.append(checked)
        elif counts[checked.key] > 1:
            bad.append(BadRow(line, checked.key, "duplicate_file", f"{counts[checked.key]} rows"))
        elif not (audio_dir / checked.key).is_file():
            bad.append(BadRow(line, checked.key, "missing_audio", f"{audio_dir / checked.key}"))
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


def _drop_unknown(rows: list[_Row], labels_file: Path) -> list[_Row]:
    kept = [row for row in rows if row.speaker_id != UNKNOWN_SPEAKER]
    if len(kept) != len(rows):
        log.info(
            "%s: dropped %d utterance(s) of speaker %r",
            labels_file,
            len(rows) - len(kept),
            UNKNOWN_SPEAKER,
        )
    return kept


def load_rows(labels_file: Path, config: CorpusConfig) -> list[_Row]:
    """Reads, validates (policy `config.on_bad_rows`) and drops Unknown-speaker rows."""
    raw = read_label_rows(labels_file, config.columns)
    good, bad = validate_rows(raw, config.audio_dir)
    _apply_row_policy(labels_file, bad, config.on_bad_rows)
    return _drop_unknown(good, labels_file)


# --------------------------------------------------------------------------- audio headers


class DurationCache:
    """Audio headers cached in a JSON file, keyed by file name and checked by size + mtime.

    A missing or unreadable cache file (or one written for another audio directory) starts
    empty; the cache is rewritten atomically by `save`.
    """

    def __init__(self, path: Path | None, audio_dir: Path):
        self.path = None if path is None else Path(path)
        self.audio_dir = str(Path(audio_dir).resolve())
        self._entries: dict[str, dict] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                log.warning("ignoring unreadable duration cache %s (%s)", self.path, err)
                return
            if data.get("audio_dir") == self.audio_dir:
                self._entries = data.get("files", {})

    def probe(self, key: str, path: Path) -> audio_lib.AudioInfo:
        """Header of `path`, from the cache when its size and mtime are unchanged."""
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
        tmp.write_text(json.dumps({"audio_dir": self.audio_dir, "files": self._entries}))
        os.replace(tmp, self.path)
        self._dirty = False


def probe_rows(
    rows: Sequence[_Row], config: CorpusConfig, cache: DurationCache
) -> tuple[dict[str, float], list[SkippedAudio]]:
    """Durations (seconds) of the rows' audio, and the files failing the header checks."""
    durations, problems = {}, []
    # disable=None: a bar on terminals only (probing ~100k MSP-Podcast files takes minutes).
    for row in tqdm.tqdm(rows, desc="probing audio", unit="file", disable=None, leave=False):
        if row.key in durations:
            continue
        path = config.audio_dir / row.key
        try:
            info = cache.probe(row.key, path)
            audio_lib.check_audio_info(
                info, path, config.sample_rate, config.resample, config.channels
            )
        except audio_lib.AudioError as err:
            problems.append(SkippedAudio(row.key, str(path), err.reason, err.detail))
            continue
        durations[row.key] = info.duration
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
    rows: Sequence[_Row], durations: Mapping[str, float], test_a_seconds: float
) -> tuple[list[_Row], list[_Row]]:
    """Per speaker: file-name order, utterances into test_a until `test_a_seconds` is reached.

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
                total += durations[row.key]
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
    """Newer-release test rows of speakers absent from the older release's test split."""
    old_test = {row.speaker_id for name in ("test_a", "test_b") for row in old_splits[name]}
    old_trainval = {row.speaker_id for name in ("train", "validation") for row in old_splits[name]}
    rows = [r for r in new_rows if r.split in test_c_splits and r.speaker_id not in old_test]
    if not rows:
        log.warning("test_c is empty: no new-release rows in splits %s", tuple(test_c_splits))
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
    unused = collections.Counter()
    for row in rows:
        split = by_name.get(row.split)
        if split is None:
            unused[row.split] += 1
        else:
            assigned[split].append(row)
    if unused:
        log.info("rows in unused splits (not loaded): %s", dict(sorted(unused.items())))
    return assigned


def _to_utterances(
    rows: Sequence[_Row], config: CorpusConfig, durations: Mapping[str, float], index: Mapping
) -> list[Utterance]:
    return [
        Utterance(
            key=row.key,
            path=(config.audio_dir / row.key).resolve(),
            speaker_id=row.speaker_id,
            speaker_index=index.get(row.speaker_id, -1),
            arousal=row.arousal,
            valence=row.valence,
            dominance=row.dominance,
            gender=row.gender,
            duration=durations[row.key],
        )
        for row in rows
    ]


def load_corpus(config: CorpusConfig) -> Corpus:
    """Reads, validates and splits the corpus described by `config`.

    Raises:
      CorpusError: missing labels file or column; `BadRowsError` / `BadAudioError` under the
        "error" policies.
    """
    if not config.audio_dir.is_dir():
        raise CorpusError(f"audio directory {config.audio_dir} does not exist")
    labels_file = config.resolve_labels_file()
    new_labels_file = config.resolve_new_labels_file()
    old_rows = load_rows(labels_file, config)
    new_rows = load_rows(new_labels_file, config) if new_labels_file else []
    old = _assign_old_splits(old_rows, config)

    cache = DurationCache(config.duration_cache, config.audio_dir)
    used = [*old["train"], *old["validation"], *old["test"]]
    used += [r for r in new_rows if r.split in config.test_c_splits]
    try:
        durations, problems = probe_rows(used, config, cache)
    finally:
        cache.save()
    _apply_audio_policy(problems, config.on_bad_audio)

    def good(rows):
        return [r for r in rows if r.key in durations]

    rows: dict[str, list[_Row]] = {
        "train": sorted(good(old["train"]), key=lambda r: r.key),
        "validation": sorted(good(old["validation"]), key=lambda r: r.key),
    }
    rows["test_a"], rows["test_b"] = split_test_a_b(
        good(old["test"]), durations, config.test_a_seconds
    )
    if new_labels_file is not None:
        rows["test_c"] = select_test_c(good(new_rows), rows, config.test_c_splits)
    else:
        log.info("no new-release labels file configured: test_c is not built")
    speakers = build_speaker_index(rows)
    index = {speaker: i for i, speaker in enumerate(speakers)}
    splits = {}
    for name, split_rows in rows.items():
        # test_c speakers are unseen by construction, even if an id also occurs in train.
        split_index = {} if name == "test_c" else index
        splits[name] = _to_utterances(split_rows, config, durations, split_index)
    for name, utts in splits.items():
        log.info("%s: %d utterances, %.1f h", name, len(utts), sum(u.duration for u in utts) / 3600)
    return Corpus(splits=splits, speakers=speakers, skipped_audio=tuple(problems))


def write_speakers(corpus: Corpus, path: Path) -> None:
    """Writes the speaker index as JSON: {"speakers": [ids in index order]}."""
    Path(path).write_text(json.dumps({"speakers": list(corpus.speakers)}, indent=1))


def read_speakers(path: Path) -> tuple[str, ...]:
    """Reads a speaker index written by `write_speakers`."""
    return tuple(json.loads(Path(path).read_text())["speakers"])
