"""TFDS builder: an MSP-Podcast-layout corpus -> `array_record` files, without TensorFlow.

Usage:

    python -m papt_jax.data.prepare --corpus_dir /data/MSP-Podcast-1.6 --out DATA_DIR \
        [--new_corpus_dir /data/MSP-Podcast-1.10 | --new_labels_file Labels_new/labels.csv] \
        [--test_splits Test1] [--new_test_splits Test1] [--test_a_seconds 200] \
        [--on_bad_audio skip|error] [--on_bad_rows error|skip] [--resample] [--readers N]

The flags mirror the pipeline's `data.*` config keys; run with --help for all of them.
`--readers` (not a config key: it changes nothing in the output) sets the number of reader
processes; by default one per core, fewer for a small corpus.

The dataset lands in DATA_DIR/papt_msp_podcast/<VERSION>/ next to these files:

* speakers.json: the speaker index (see `msp_podcast.build_speaker_index`).
* skipped.json: audio files left out, each with its reason tag (see `papt_jax.data.audio`:
  corrupt, truncated, empty, wrong_sample_rate, multi_channel, too_short, non_finite,
  clipping, silent).
* index/<split>.json: key and number of samples of every record, in record order, so the
  pipeline can bucket by length without reading the audio.
* build_config.json: the reader options the dataset was built with; building again into
  the same DATA_DIR with other options is refused rather than silently reusing the data.
* sources.json: what the dataset was read from (`papt_jax.data.sources`): the labels files'
  SHA-256 and every named audio file's size and time (`--verify_audio=content`: its SHA-256
  too). Building again after any of them changed is refused too, naming what changed.

The corpus directory reaches TFDS the standard way for manually downloaded data
(`DownloadConfig(manual_dir=...)`); the other reader options travel as a builder keyword
argument (`corpus_config`), so they need no registered BuilderConfig. Audio is stored as
`tfds.features.Tensor(shape=(None,), dtype=int16)` because `tfds.features.Audio` needs
TensorFlow; `audio.read_audio` brings every subtype (integer or float) to full 16-bit scale.

The builder derives from TFDS's `FileReaderBuilder` (the base of `GeneratorBasedBuilder`)
and implements `_download_and_prepare` itself: `split_writer` writes the records, order,
shards and metadata TFDS's writer would, with the reading, encoding and compressing spread
over reader processes, where TFDS's writer does all of it in the calling process, and
compresses with zstd level 1 instead of TFDS's 3 (a third faster, files 1 % larger). The record
files are the same byte for byte whatever the number of readers, and from one build to the
next (`tf_example` writes the fields in a fixed order; TFDS's serializer does not).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from tensorflow_datasets.core import dataset_builder

from papt_jax import cli, storage
from papt_jax.data import audio as audio_lib
from papt_jax.data import dataset_files, msp_podcast, shard_jobs, sources, split_writer, tf_example
from papt_jax.data.dataset_files import DATASET_NAME, FILE_FORMAT, PrepareError
from papt_jax.errors import UserError

log = logging.getLogger(__name__)


class _CorpusInfo(tfds.core.DatasetInfo):
    """The `DatasetInfo` of a user's own corpus, whose statistics TFDS never published."""

    def initialize_from_bucket(self) -> None:
        # A builder whose folder holds no dataset_info.json yet asks TFDS's bucket for it.
        # TFDS's own version makes a temporary folder before it finds the bucket off (or
        # without this name) and never removes it: one empty /tmp/tmp*tfds per build.
        return None


class PaptMspPodcast(dataset_builder.FileReaderBuilder):
    """MSP-Podcast (or the embedded synthetic corpus) split as in Tran et al. 2023."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "train, validation, test_a, test_b and optional test_c splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    MSP-Podcast is licence-gated: request it from the MSP lab (UT Dallas) and unpack it so that
    CORPUS/Audios/ holds the wav files and CORPUS/Labels/labels_consensus.csv (or
    labels_concensus.csv) the labels. Pass CORPUS as the manual directory:
    `python -m papt_jax.data.prepare --corpus_dir CORPUS --out DATA_DIR`. For test_c, add the
    newer release's folder with --new_corpus_dir (its own Audios/ and Labels/), or a newer
    labels file inside the same tree with --new_labels_file (audio then from CORPUS/Audios/).
    The embedded synthetic corpus (papt_jax.data.synthetic) has the same layout.
    """
    # TFDS looks for a download-checksums file next to the builder's code via importlib
    # resources, which for an editable install needs the `importlib_resources` backport.
    # Nothing is downloaded, so there are no checksums to find.
    _checksums_path = None

    def __init__(
        self,
        *,
        corpus_config: msp_podcast.CorpusConfig | None = None,
        readers: int | None = None,
        **kwargs,
    ):
        """Args:
        corpus_config: reader options; its `corpus_dir` is replaced by the manual
          directory when one is given. None suffices for reading a built dataset.
        readers: reader processes; None: `split_writer.default_readers` for the corpus.
        **kwargs: `tfds.core.DatasetBuilder` arguments (data_dir, file_format, ...).
        """
        self.corpus_config = corpus_config
        self.readers = readers
        self.corpus: msp_podcast.Corpus | None = None
        self.skipped: list[msp_podcast.SkippedAudio] = []
        # Filled by a build: split -> keys, lengths and speakers in record order; the
        # number of readers used, the seconds of audio in the records and the wall seconds
        # of each phase.
        self.index: dict[str, dict[str, list]] = {}
        self.readers_used = 0
        self.audio_seconds = 0.0
        self.phases: dict[str, float] = {}
        super().__init__(**kwargs)

    # TFDS announces "Downloading and preparing ... Unknown size" and "downloaded and
    # prepared" on stdout; nothing is downloaded here, so say what happens instead.
    def _log_download_bytes(self) -> None:
        log.info("building the dataset in %s", self.data_dir)

    def _log_download_done(self) -> None:
        log.info("dataset built in %s", self.data_dir)

    def _info(self) -> tfds.core.DatasetInfo:
        # dataset_info_from_configs would look for metadata files next to this module.
        return _CorpusInfo(
            builder=self,
            description="Speech emotion corpus in MSP-Podcast layout, split as in PAPT.",
            features=tfds.features.FeaturesDict(
                {
                    "key": tfds.features.Text(),
                    "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
                    "speaker": tfds.features.Text(),
                    "speaker_index": np.int32,
                    "arousal": np.float32,
                    "valence": np.float32,
                    "dominance": np.float32,
                    "gender": tfds.features.Text(),
                    "num_samples": np.int32,
                }
            ),
            homepage="https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html",
        )

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        config = self.corpus_config
        if config is None:
            raise msp_podcast.CorpusError("building needs corpus_config")
        if dl_manager.manual_dir is not None:
            config = dataclasses.replace(config, corpus_dir=Path(dl_manager.manual_dir))
        download_config = download_config or tfds.download.DownloadConfig()
        clock = time.perf_counter()
        self.corpus = msp_podcast.load_corpus(config)
        self.phases["corpus"] = time.perf_counter() - clock
        self.skipped = list(self.corpus.skipped_audio)
        sources = {}
        for name, utterances in self.corpus.splits.items():
            if utterances:
                sources[name] = [_source(u) for u in utterances]
            else:
                log.warning("split %s is empty and is not written", name)
        reading = self._reading(config)
        header_seconds = sum(s.seconds for split in sources.values() for s in split)
        self.readers_used = self.readers or split_writer.default_readers(header_seconds)
        with split_writer.Readers(self.readers_used) as readers:
            clock = time.perf_counter()
            kept = self._measure(readers, reading, sources, config.on_bad_audio)
            shard_config = download_config.get_shard_config()
            layouts = [split_writer.layout(name, *kept[name], shard_config) for name in sources]
            # Starting the reader processes is part of the first pass.
            self.phases["check"] = time.perf_counter() - clock
            clock = time.perf_counter()
            try:
                infos = split_writer.write_all(
                    readers, reading, layouts, self._get_filename_template
                )
            except shard_jobs.AudioChanged as err:
                raise PrepareError(
                    str(err), hint="audio files changed while the dataset was built; build again"
                ) from None
            self.phases["write"] = time.perf_counter() - clock
        self.info.set_splits(tfds.core.SplitDict(infos))
        samples = sum(m.num_samples for split in layouts for m in split.measured)
        self.audio_seconds = samples / config.sample_rate
        self.index = {
            split.name: {
                "keys": [s.key for s in split.sources],
                "num_samples": [m.num_samples for m in split.measured],
                "speakers": [s.values["speaker"] for s in split.sources],
            }
            for split in layouts
        }

    def _reading(self, config: msp_podcast.CorpusConfig) -> shard_jobs.Reading:
        """How readers read and encode this dataset's utterances (see `_info`'s features)."""
        return shard_jobs.Reading(
            fields=tf_example.fields_from_features(self.info.features.get_serialized_info()),
            audio_field="audio",
            length_field="num_samples",
            sample_rate=config.sample_rate,
            resample=config.resample,
            channels=config.channels,
            file_format=self.info.file_format.value,
        )

    def _measure(
        self,
        readers: split_writer.Readers,
        reading: shard_jobs.Reading,
        sources: dict[str, list[shard_jobs.Source]],
        on_bad_audio: str,
    ) -> dict[str, tuple[list[shard_jobs.Source], list[shard_jobs.Measured]]]:
        """Reads and checks every utterance; per split, those kept and their measurements.

        Files failing a check are met in corpus order (split by split), as a one-by-one
        build meets them: under "error" the first raises `BadAudioError`, under "skip"
        they are appended to `self.skipped` in that order.
        """
        kept = {name: ([], []) for name in sources}
        names = [name for name, split in sources.items() for _ in split]
        flat = [source for split in sources.values() for source in split]
        for name, source, result in zip(
            names, flat, split_writer.measure_all(readers, reading, flat), strict=True
        ):
            if isinstance(result, shard_jobs.Unreadable):
                problem = msp_podcast.SkippedAudio(
                    source.key, source.path, result.reason, result.detail
                )
                if on_bad_audio == "error":
                    raise msp_podcast.BadAudioError([problem])
                self.skipped.append(problem)
                continue
            kept[name][0].append(source)
            kept[name][1].append(result)
        for name, (split, _) in kept.items():
            if not split:
                keys = {s.key for s in sources[name]}
                reasons = collections.Counter(p.reason for p in self.skipped if p.key in keys)
                raise PrepareError(
                    f"split {name}: all {len(sources[name])} audio file(s) failed their "
                    f"checks {dict(sorted(reasons.items()))}",
                    hint="fix the files, or change the split settings",
                )
        return kept


def _source(utt: msp_podcast.Utterance) -> shard_jobs.Source:
    """What a reader needs to turn `utt` into a record: every feature but the audio."""
    return shard_jobs.Source(
        key=utt.key,
        path=str(utt.path),
        seconds=utt.duration,
        values={
            "key": utt.key,
            "speaker": utt.speaker_id,
            "speaker_index": utt.speaker_index,
            "arousal": utt.arousal,
            "valence": utt.valence,
            "dominance": utt.dominance,
            "gender": utt.gender,
        },
    )


def dataset_dir(data_dir: str | Path) -> Path:
    """DATA_DIR/papt_msp_podcast/<VERSION>: where the built dataset and its side files live."""
    return Path(data_dir) / DATASET_NAME / str(PaptMspPodcast.VERSION)


def prepare(
    config: msp_podcast.CorpusConfig,
    data_dir: str | Path,
    readers: int | None = None,
    verify_audio: str = sources.STAT,
) -> Path:
    """Builds the dataset for `config` under `data_dir` (a no-op if already built).

    Args:
      config: reader options; `duration_cache` None puts the cache at
        DATA_DIR/duration_cache.json.
      data_dir: TFDS data directory.
      readers: reader processes (the output does not depend on it); None: one per core,
        fewer for a small corpus (`split_writer.default_readers`).
      verify_audio: how the audio files read are recorded and, for a built dataset,
        compared: "stat" (size and modification time) or "content" (also SHA-256).

    Returns:
      The dataset directory (DATA_DIR/papt_msp_podcast/<VERSION>).

    Raises:
      PrepareError: a dataset built with other reader options, or from labels or audio
        files that changed since, is already in `data_dir`.
      msp_podcast.CorpusError: the corpus cannot be read (see `msp_podcast.load_corpus`).
    """
    data_dir = Path(data_dir)
    out = dataset_dir(data_dir)
    if config.duration_cache is None:
        config = dataclasses.replace(config, duration_cache=data_dir / "duration_cache.json")
    record = dataset_files.config_record(config)
    if (out / "dataset_info.json").is_file():
        dataset_files.check_reusable(out, record, verify_audio)
        log.info("%s is already built", out)
        return out
    # TFDS would refuse a missing or empty manual directory with its own AssertionError.
    msp_podcast.check_release_dir(config.corpus_dir, "data.corpus_dir")
    # The bars that matter (audio-hours, x real time) are split_writer's; TFDS's own would
    # only show raw shard patterns.
    tfds.disable_progress_bar()
    start = time.perf_counter()
    builder = PaptMspPodcast(
        corpus_config=config, readers=readers, data_dir=str(data_dir), file_format=FILE_FORMAT
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(config.corpus_dir))
    )
    if "test_c" not in builder.corpus.splits:
        print("no newer release given (new_corpus_dir / new_labels_file): test_c not built")
    msp_podcast.write_speakers(builder.corpus, out / "speakers.json")
    dataset_files.write_skipped(builder.skipped, out)
    dataset_files.write_index(out, {split: builder.index[split] for split in builder.info.splits})
    dataset_files.write_sources(builder.corpus, out, verify_audio)
    # Written last: its presence marks a complete build.
    (out / dataset_files.BUILD_CONFIG_FILE).write_text(json.dumps(record, indent=1))
    for split, info in builder.info.splits.items():
        print(f"{split}: {info.num_examples} examples")
    wall = time.perf_counter() - start
    phases = {**builder.phases, "rest": wall - sum(builder.phases.values())}
    log.info(
        "seconds per phase: %s",
        ", ".join(f"{k} {v:.1f}" for k, v in phases.items()),
        extra={"phases": phases},
    )
    print(split_writer.describe_speed(builder.audio_seconds, wall, builder.readers_used))
    return out


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the command-line flags (named like the pipeline's `data.*` config keys).

    Called only when this module is the program, so importing it defines no flags.
    """
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("corpus_dir", None, "Release folder with Audios/ and Labels/.", **fv)
    flags.DEFINE_string("out", None, "TFDS data directory to build into.", **fv)
    flags.DEFINE_string(
        "labels_file", None, "Labels CSV (default: Labels/labels_c[o|e]nsensus.csv).", **fv
    )
    flags.DEFINE_string(
        "new_corpus_dir", None, "Newer release folder for test_c (its own Audios/, Labels/).", **fv
    )
    flags.DEFINE_string(
        "new_labels_file",
        None,
        "Newer labels CSV for test_c: inside the corpus tree (audio from --corpus_dir), or with "
        "--new_corpus_dir an override of the labels file found there.",
        **fv,
    )
    flags.DEFINE_list("train_splits", ["Train"], "Split_Set values of train.", **fv)
    flags.DEFINE_list(
        "validation_splits", ["Development", "Validation"], "... of validation.", **fv
    )
    flags.DEFINE_list("test_splits", ["Test1"], "... of the test set (test_a/test_b).", **fv)
    flags.DEFINE_list("new_test_splits", ["Test1"], "... of the newer release's test set.", **fv)
    flags.DEFINE_float("test_a_seconds", 200.0, "Per-speaker seconds in test_a.", **fv)
    flags.DEFINE_enum("on_bad_audio", "skip", ["skip", "error"], "Bad audio policy.", **fv)
    flags.DEFINE_enum("on_bad_rows", "error", ["skip", "error"], "Bad CSV row policy.", **fv)
    flags.DEFINE_bool("resample", False, "Resample other rates to 16 kHz.", **fv)
    flags.DEFINE_enum(
        "channels", "error", list(audio_lib.CHANNEL_POLICIES), "Multi-channel policy.", **fv
    )
    flags.DEFINE_string("duration_cache", None, "Default: OUT/duration_cache.json.", **fv)
    flags.DEFINE_integer(
        "readers",
        None,
        "Reader processes (default: one per core, fewer for a small corpus).",
        lower_bound=1,
        **fv,
    )
    flags.DEFINE_enum(
        "verify_audio",
        sources.STAT,
        [sources.STAT, sources.CONTENT],
        "How the audio read is recorded (sources.json) and checked before a built dataset "
        "is reused: size and modification time, or also the SHA-256 of its bytes.",
        **fv,
    )
    flags.mark_flags_as_required(["corpus_dir", "out"], flag_values=flag_values)


def config_from_flags(fv: flags.FlagValues) -> msp_podcast.CorpusConfig:
    """The `CorpusConfig` the flags describe (flags as defined by `define_flags`)."""

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return msp_podcast.CorpusConfig(
        corpus_dir=Path(fv.corpus_dir),
        labels_file=path(fv.labels_file),
        new_corpus_dir=path(fv.new_corpus_dir),
        new_labels_file=path(fv.new_labels_file),
        splits={
            "train": tuple(fv.train_splits),
            "validation": tuple(fv.validation_splits),
            "test": tuple(fv.test_splits),
        },
        test_c_splits=tuple(fv.new_test_splits),
        test_a_seconds=fv.test_a_seconds,
        on_bad_rows=fv.on_bad_rows,
        on_bad_audio=fv.on_bad_audio,
        resample=fv.resample,
        channels=fv.channels,
        duration_cache=path(fv.duration_cache),
    )


def prepare_from_flags(fv: flags.FlagValues) -> Path:
    """Builds the dataset the flags (from `define_flags`) describe; returns its directory.

    The output folder is checked first: one that is (or contains) the corpus, or that
    cannot be written, is refused before any audio is read.
    """
    config = config_from_flags(fv)
    inputs = [config.corpus_dir, config.new_corpus_dir, config.labels_file, config.new_labels_file]
    storage.check_output_dir(fv.out, "--out", [p for p in inputs if p is not None])
    out = prepare(config, fv.out, readers=fv.readers, verify_audio=fv.verify_audio)
    print(f"dataset written to {out}")
    return out


def main(argv: Sequence[str]) -> None:
    """Entry point under `papt_jax.cli.run` (flags already parsed into `flags.FLAGS`)."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}", "run with --help")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    prepare_from_flags(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
