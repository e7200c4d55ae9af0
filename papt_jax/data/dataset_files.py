"""The files beside a built dataset, and whether a built dataset may be reused.

Next to the `array_record` files in DATA_DIR/papt_msp_podcast/<VERSION>/ (see
`papt_jax.data.prepare`) a build writes `index/<split>.json`, `skipped.json`,
`sources.json` (`papt_jax.data.sources`) and, last, `build_config.json`: its presence marks
a complete build. A built dataset is reused only when it was built with the same reader
options from labels and audio files that have not changed since.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from papt_jax.data import msp_podcast, sources
from papt_jax.errors import UserError

log = logging.getLogger(__name__)

DATASET_NAME = "papt_msp_podcast"
FILE_FORMAT = "array_record"
BUILD_CONFIG_FILE = "build_config.json"


class PrepareError(UserError, ValueError):
    """The output directory holds a dataset that cannot be reused."""


def config_record(config: msp_podcast.CorpusConfig) -> dict:
    """The build-relevant reader options, JSON-ready (the cache location is irrelevant)."""
    record = dataclasses.asdict(config)
    record.pop("duration_cache")
    record["corpus_dir"] = str(Path(config.corpus_dir).resolve())
    if config.new_corpus_dir is None:
        # Absent rather than null, so datasets built before the option existed still match.
        record.pop("new_corpus_dir")
    else:
        record["new_corpus_dir"] = str(Path(config.new_corpus_dir).resolve())
    return json.loads(json.dumps(record, default=str))


def write_index(out: Path, index: Mapping[str, Mapping[str, list]]) -> None:
    """index/<split>.json: keys, lengths and speaker ids in record order, and file sizes.

    Args:
      out: the dataset directory.
      index: split -> {"keys", "num_samples", "speakers"} in record order.
    """
    (out / "index").mkdir(exist_ok=True)
    for split, entries in index.items():
        # Sizes of the split's record files: a cheap check against truncation on every run.
        files = {
            f.name: f.stat().st_size
            for f in sorted(out.glob(f"{DATASET_NAME}-{split}.{FILE_FORMAT}-*"))
        }
        (out / "index" / f"{split}.json").write_text(json.dumps({**entries, "files": files}))


def write_skipped(skipped: Sequence[msp_podcast.SkippedAudio], out: Path) -> None:
    (out / "skipped.json").write_text(
        json.dumps([dataclasses.asdict(s) for s in skipped], indent=1)
    )
    if skipped:
        counts = collections.Counter(s.reason for s in skipped)
        print(
            f"skipped {len(skipped)} audio file(s) {dict(sorted(counts.items()))}; "
            f"listed in {out / 'skipped.json'}"
        )
    else:
        print("skipped 0 audio files")


def write_sources(corpus: msp_podcast.Corpus, out: Path, verify_audio: str) -> None:
    """sources.json: the labels files and every audio file the labels named, as they are."""
    audio = [str(u.path) for split in corpus.splits.values() for u in split]
    audio += [str(Path(s.path).absolute()) for s in corpus.skipped_audio]
    audio += list(corpus.missing_audio)
    content = verify_audio == sources.CONTENT
    sources.write(out, sources.scan(corpus.labels_files, audio, content=content))


def source_changes(out: Path, verify_audio: str = sources.STAT) -> list[str] | None:
    """What changed in the files a built dataset was read from (empty: nothing), or None
    when the dataset records no sources (built by an earlier version)."""
    record = sources.read(out)
    if record is None:
        return None
    return sources.changes(record, content=verify_audio == sources.CONTENT)


def check_reusable(out: Path, record: dict, verify_audio: str) -> None:
    """Refuses a built dataset made with other options or from files that changed since.

    Args:
      out: the dataset directory (it has dataset_info.json).
      record: `config_record` of the options asked for now.
      verify_audio: "stat" or "content" (see `papt_jax.data.sources`).

    Raises:
      PrepareError: naming the differing options or what changed.
    """
    if not (out / BUILD_CONFIG_FILE).is_file():
        raise PrepareError(f"{out} is an incomplete build (no {BUILD_CONFIG_FILE}); delete it")
    built = json.loads((out / BUILD_CONFIG_FILE).read_text())
    if built != record:
        changed = sorted(k for k in {*built, *record} if built.get(k) != record.get(k))
        raise PrepareError(
            f"{out} was built with other options (differing: {', '.join(changed)})",
            hint="use another output directory, or delete this one to rebuild",
        )
    changes = source_changes(out, verify_audio)
    if changes is None:
        log.warning(
            "%s records no fingerprints of its labels and audio (built by an earlier "
            "version): changes to them cannot be noticed; delete it to rebuild",
            out,
        )
    elif changes:
        raise PrepareError(
            f"{out} was built from files that changed since: {'; '.join(changes)}",
            hint="delete it to rebuild, or use another output directory",
        )
