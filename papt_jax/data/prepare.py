"""TFDS builder: an MSP-Podcast-layout corpus -> `array_record` files, without TensorFlow.

Usage:

    python -m papt_jax.data.prepare --corpus CORPUS_DIR --out DATA_DIR \
        [--new_labels Labels_new/labels_consensus.csv] [--test_a_seconds 200] \
        [--on_bad_audio skip|error] [--on_bad_rows error|skip] [--resample]

The dataset lands in DATA_DIR/papt_msp_podcast/<VERSION>/ next to these files:

* speakers.json: the speaker index (see `msp_podcast.build_speaker_index`).
* skipped.json: audio files left out, each with its reason.
* index/<split>.json: key and number of samples of every record, in record order, so the
  pipeline can bucket by length without reading the audio.
* build_config.json: the reader options the dataset was built with; building again into
  the same DATA_DIR with other options is refused rather than silently reusing the data.

The corpus directory reaches TFDS the standard way for manually downloaded data
(`DownloadConfig(manual_dir=...)`); the other reader options travel as a builder keyword
argument (`corpus_config`), so they need no registered BuilderConfig. Audio is stored as
`tfds.features.Tensor(shape=(None,), dtype=int16)` because `tfds.features.Audio` needs
TensorFlow.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from papt_jax.data import audio as audio_lib
from papt_jax.data import msp_podcast

log = logging.getLogger(__name__)

DATASET_NAME = "papt_msp_podcast"
FILE_FORMAT = "array_record"


class PaptMspPodcast(tfds.core.GeneratorBasedBuilder):
    """MSP-Podcast (or the embedded synthetic corpus) split as in Tran et al. 2023."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "train, validation, test_a, test_b and optional test_c splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    MSP-Podcast is licence-gated: request it from the MSP lab (UT Dallas) and unpack it so that
    CORPUS/Audios/ holds the wav files and CORPUS/Labels/labels_consensus.csv (or
    labels_concensus.csv) the labels. Pass CORPUS as the manual directory:
    `python -m papt_jax.data.prepare --corpus CORPUS --out DATA_DIR`. For test_c, add the newer
    release's labels file with --new_labels (its audio must be in the same Audios/ folder).
    The embedded synthetic corpus (papt_jax.data.synthetic) has the same layout.
    """
    # TFDS looks for a download-checksums file next to the builder's code via importlib
    # resources, which for an editable install needs the `importlib_resources` backport.
    # Nothing is downloaded, so there are no checksums to find.
    _checksums_path = None

    def __init__(self, *, corpus_config: msp_podcast.CorpusConfig | None = None, **kwargs):
        """Args:
        corpus_config: reader options; its `corpus_dir` is replaced by the manual
          directory when one is given. None suffices for reading a built dataset.
        **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir, file_format, ...).
        """
        self.corpus_config = corpus_config
        self.corpus: msp_podcast.Corpus | None = None
        self.skipped: list[msp_podcast.SkippedAudio] = []
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # dataset_info_from_configs would look for metadata files next to this module.
        return tfds.core.DatasetInfo(
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

    def _split_generators(self, dl_manager):
        config = self.corpus_config
        if config is None:
            raise msp_podcast.CorpusError("building needs corpus_config")
        if dl_manager.manual_dir is not None:
            config = dataclasses.replace(config, corpus_dir=Path(dl_manager.manual_dir))
        self.corpus = msp_podcast.load_corpus(config)
        self.skipped = list(self.corpus.skipped_audio)
        generators = {}
        for name, utterances in self.corpus.splits.items():
            if utterances:
                generators[name] = self._generate_examples(utterances, config)
            else:
                log.warning("split %s is empty and is not written", name)
        return generators

    def _generate_examples(
        self, utterances: Sequence[msp_podcast.Utterance], config: msp_podcast.CorpusConfig
    ) -> Iterator[tuple[str, dict]]:
        for utt in utterances:
            try:
                samples = audio_lib.read_audio(
                    utt.path, config.sample_rate, config.resample, config.channels
                )
            except audio_lib.AudioError as err:
                if config.on_bad_audio == "error":
                    raise
                self.skipped.append(
                    msp_podcast.SkippedAudio(utt.key, str(utt.path), err.reason, err.detail)
                )
                continue
            yield (
                utt.key,
                {
                    "key": utt.key,
                    "audio": samples,
                    "speaker": utt.speaker_id,
                    "speaker_index": utt.speaker_index,
                    "arousal": utt.arousal,
                    "valence": utt.valence,
                    "dominance": utt.dominance,
                    "gender": utt.gender,
                    "num_samples": samples.shape[0],
                },
            )


def dataset_dir(data_dir: str | Path) -> Path:
    """DATA_DIR/papt_msp_podcast/<VERSION>: where the built dataset and its side files live."""
    return Path(data_dir) / DATASET_NAME / str(PaptMspPodcast.VERSION)


def _config_record(config: msp_podcast.CorpusConfig) -> dict:
    """The build-relevant reader options, JSON-ready (the cache location is irrelevant)."""
    record = dataclasses.asdict(config)
    record.pop("duration_cache")
    record["corpus_dir"] = str(Path(config.corpus_dir).resolve())
    return json.loads(json.dumps(record, default=str))


def _write_index(builder: PaptMspPodcast, out: Path) -> None:
    """index/<split>.json: keys and lengths in record order (one pass over the records)."""
    (out / "index").mkdir(exist_ok=True)
    for split in builder.info.splits:
        source = builder.as_data_source(split)
        keys, lengths = [], []
        for i in range(len(source)):
            record = source[i]
            keys.append(record["key"].decode())
            lengths.append(int(record["num_samples"]))
        (out / "index" / f"{split}.json").write_text(
            json.dumps({"keys": keys, "num_samples": lengths})
        )


def _write_skipped(skipped: Sequence[msp_podcast.SkippedAudio], out: Path) -> None:
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


def prepare(config: msp_podcast.CorpusConfig, data_dir: str | Path) -> Path:
    """Builds the dataset for `config` under `data_dir` (a no-op if already built).

    Args:
      config: reader options; `duration_cache` None puts the cache at
        DATA_DIR/duration_cache.json.
      data_dir: TFDS data directory.

    Returns:
      The dataset directory (DATA_DIR/papt_msp_podcast/<VERSION>).

    Raises:
      ValueError: a dataset built with other reader options is already in `data_dir`.
    """
    data_dir = Path(data_dir)
    out = dataset_dir(data_dir)
    if config.duration_cache is None:
        config = dataclasses.replace(config, duration_cache=data_dir / "duration_cache.json")
    record = _config_record(config)
    if (out / "dataset_info.json").is_file():
        if not (out / "build_config.json").is_file():
            raise ValueError(f"{out} is an incomplete build (no build_config.json); delete it")
        built = json.loads((out / "build_config.json").read_text())
        if built != record:
            raise ValueError(
                f"{out} was built with other options ({built}); use another --out or delete it"
            )
        log.info("%s is already built", out)
        return out
    builder = PaptMspPodcast(corpus_config=config, data_dir=str(data_dir), file_format=FILE_FORMAT)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(config.corpus_dir))
    )
    if "test_c" not in builder.corpus.splits:
        print("no new-release labels file given: test_c not built")
    msp_podcast.write_speakers(builder.corpus, out / "speakers.json")
    _write_skipped(builder.skipped, out)
    _write_index(builder, out)
    (out / "build_config.json").write_text(json.dumps(record, indent=1))
    for split, info in builder.info.splits.items():
        print(f"{split}: {info.num_examples} examples")
    return out


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, type=Path, help="corpus directory")
    parser.add_argument("--out", required=True, type=Path, help="TFDS data directory")
    parser.add_argument("--labels", type=Path, help="labels CSV (default: auto-detect)")
    parser.add_argument("--new_labels", type=Path, help="newer release's labels CSV (test_c)")
    parser.add_argument(
        "--test_c_splits", default="Test1", help="comma-separated new-release test split names"
    )
    parser.add_argument("--test_a_seconds", type=float, default=200.0)
    parser.add_argument("--on_bad_audio", choices=("skip", "error"), default="skip")
    parser.add_argument("--on_bad_rows", choices=("skip", "error"), default="error")
    parser.add_argument("--resample", action="store_true", help="resample other rates to 16 kHz")
    parser.add_argument("--channels", choices=audio_lib.CHANNEL_POLICIES, default="error")
    parser.add_argument("--duration_cache", type=Path, help="default: OUT/duration_cache.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = msp_podcast.CorpusConfig(
        corpus_dir=args.corpus,
        labels_file=args.labels,
        new_labels_file=args.new_labels,
        test_c_splits=tuple(s for s in args.test_c_splits.split(",") if s),
        test_a_seconds=args.test_a_seconds,
        on_bad_rows=args.on_bad_rows,
        on_bad_audio=args.on_bad_audio,
        resample=args.resample,
        channels=args.channels,
        duration_cache=args.duration_cache,
    )
    out = prepare(config, args.out)
    print(f"dataset written to {out}")


if __name__ == "__main__":
    main()
