"""The splits of Tran et al. (2023): train, validation, test-a / test-b per speaker, test-c
from a newer release; the speaker index; `load_corpus`, the reader's entry point."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.data.msp_podcast.durations import DurationCache, apply_audio_policy, probe_rows
from papt_jax.data.msp_podcast.rows import LabelRow, load_rows
from papt_jax.data.msp_podcast.schema import (
    MAX_LISTED_ROWS,
    CorpusConfig,
    SkippedAudio,
    check_release_dir,
)

log = logging.getLogger(__name__)


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
      labels_files: the labels CSVs read.
      missing_audio: audio files named by skipped rows that do not exist (absolute paths).
    """

    splits: Mapping[str, list[Utterance]]
    speakers: tuple[str, ...]
    skipped_audio: tuple[SkippedAudio, ...] = ()
    labels_files: tuple[Path, ...] = ()
    missing_audio: tuple[str, ...] = ()

    def speaker_to_index(self) -> dict[str, int]:
        return {speaker: i for i, speaker in enumerate(self.speakers)}


def split_test_a_b(
    rows: Sequence[LabelRow], durations: Mapping[Path, float], test_a_seconds: float
) -> tuple[list[LabelRow], list[LabelRow]]:
    """Per speaker: file-name order, utterances into test_a until `test_a_seconds` is reached.

    Args:
      rows: the test rows.
      durations: seconds per audio path (`LabelRow.path`).
      test_a_seconds: per-speaker threshold.

    Returns:
      (test_a, test_b), each sorted by (speaker, file name).
    """
    by_speaker: dict[str, list[LabelRow]] = collections.defaultdict(list)
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


def build_speaker_index(splits: Mapping[str, Sequence[LabelRow]]) -> tuple[str, ...]:
    """Sorted distinct speaker ids of every split used in pre-training (not test_c)."""
    speakers = {row.speaker_id for name, rows in splits.items() if name != "test_c" for row in rows}
    return tuple(sorted(speakers, key=speaker_sort_key))


def select_test_c(
    new_rows: Sequence[LabelRow],
    old_splits: Mapping[str, Sequence[LabelRow]],
    test_c_splits: Sequence[str],
) -> list[LabelRow]:
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


def _assign_old_splits(rows: Sequence[LabelRow], config: CorpusConfig) -> dict[str, list[LabelRow]]:
    """train / validation / test rows of the older release by `Split_Set` name."""
    by_name = {value: split for split, values in config.splits.items() for value in values}
    assigned: dict[str, list[LabelRow]] = {"train": [], "validation": [], "test": []}
    for row in rows:
        assigned[by_name[row.split]].append(row)
    return assigned


def _to_utterances(
    rows: Sequence[LabelRow], durations: Mapping[Path, float], index: Mapping
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
    missing: list[str] = []
    old_rows = load_rows(labels_file, config, _old_wanted(config), config.audio_dir, missing)
    new_rows = []
    if new_labels_file is not None:
        log.info("test_c: labels %s, audio %s", new_labels_file, config.new_audio_dir)
        wanted = {"test_c": tuple(config.test_c_splits)}
        new_rows = load_rows(new_labels_file, config, wanted, config.new_audio_dir, missing)
    old = _assign_old_splits(old_rows, config)

    cache = DurationCache(config.duration_cache)
    try:
        durations, problems = probe_rows([*old_rows, *new_rows], config, cache)
    finally:
        cache.save()
    apply_audio_policy(problems, config.on_bad_audio)

    def good(rows):
        return [r for r in rows if r.path in durations]

    rows: dict[str, list[LabelRow]] = {
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
    return Corpus(
        splits=splits,
        speakers=speakers,
        skipped_audio=tuple(problems),
        labels_files=tuple(p for p in (labels_file, new_labels_file) if p is not None),
        missing_audio=tuple(missing),
    )


def write_speakers(corpus: Corpus, path: Path) -> None:
    """Writes the speaker index as JSON: {"speakers": [ids in index order]}."""
    Path(path).write_text(json.dumps({"speakers": list(corpus.speakers)}, indent=1))


def read_speakers(path: Path) -> tuple[str, ...]:
    """Reads a speaker index written by `write_speakers`."""
    return tuple(json.loads(Path(path).read_text())["speakers"])
