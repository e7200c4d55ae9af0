"""The MSP-Podcast schema: file layout, CSV header, label names and range, split names,
the reader's options (`CorpusConfig`) and its errors."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

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
