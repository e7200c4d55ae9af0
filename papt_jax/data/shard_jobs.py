"""What one reader process does while a dataset is prepared: measure an utterance, write a shard.

`split_writer` runs these functions in a pool of reader processes (or in its own process when
there is one reader). Arguments and results are plain picklable data; an `audio.AudioError`
is returned as its reason and detail rather than raised, since its class does not survive
pickling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import soundfile
from tensorflow_datasets.core import file_adapters

from papt_jax.data import audio as audio_lib
from papt_jax.data import tf_example


@dataclasses.dataclass(frozen=True)
class Reading:
    """How every utterance of one build is read and encoded.

    Attributes:
      fields: the dataset's features as `tf_example` serializes them.
      audio_field: the feature that receives the samples (int16).
      length_field: the feature that receives their number.
      sample_rate, resample, channels: as in `audio.read_audio`.
      file_format: TFDS file format of the shard files (its `FileFormat` value).
    """

    fields: tuple[tf_example.Field, ...]
    audio_field: str
    length_field: str
    sample_rate: int
    resample: bool
    channels: audio_lib.ChannelPolicy
    file_format: str


@dataclasses.dataclass(frozen=True)
class Source:
    """One utterance to turn into a record.

    Attributes:
      key: the record's key (unique within its split).
      path: the audio file.
      seconds: its duration from the header (for progress and the throughput figure).
      values: every feature but the audio and its length.
    """

    key: str
    path: str
    seconds: float
    values: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Measured:
    """A readable utterance: samples after reading, bytes of its serialized record."""

    num_samples: int
    num_bytes: int


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An utterance whose audio failed a check: the `audio.AudioError` reason and detail."""

    reason: str
    detail: str


class AudioChanged(Exception):
    """An audio file read differently when its shard was written than when it was measured."""


def _read_checked(reading: Reading, path: str) -> np.ndarray | None:
    """The samples of a file that passed `measure`, if it is 16-bit PCM mono at the expected
    rate, else None.

    `audio.read_audio` decodes to float32, checks, and converts back, a round trip that is
    exact for such files (audio.py: 16-bit PCM is stored bit-exactly) and costs several
    times the reading itself; tests/data/test_prepare.py checks both give the same samples.
    """
    with soundfile.SoundFile(path) as f:
        if (f.subtype, f.channels, f.samplerate) == ("PCM_16", 1, reading.sample_rate):
            return f.read(dtype="int16")
    return None


def _example(reading: Reading, source: Source, checked: bool = False) -> dict[str, Any]:
    """Reads the audio of `source` into its example.

    Args:
      reading: how to read it.
      source: the utterance.
      checked: True when the file already passed `measure` (see `_read_checked`).

    Raises:
      audio.AudioError: the file fails a check.
    """
    samples = _read_checked(reading, source.path) if checked else None
    if samples is None:
        samples = audio_lib.read_audio(
            source.path, reading.sample_rate, reading.resample, reading.channels
        )
    return {
        **source.values,
        reading.audio_field: samples,
        reading.length_field: samples.shape[0],
    }


def measure(reading: Reading, source: Source) -> Measured | Unreadable:
    """Reads and checks one utterance and measures its record, without building it."""
    try:
        example = _example(reading, source)
    except audio_lib.AudioError as err:
        return Unreadable(err.reason, err.detail)
    return Measured(
        example[reading.length_field], tf_example.serialized_size(reading.fields, example)
    )


def write_shard(
    reading: Reading, path: str, sources: Sequence[Source], measured: Sequence[Measured]
) -> int:
    """Writes one shard file: the records of `sources`, in that order.

    Args:
      reading: as for `measure`.
      path: the shard file to write.
      sources: the shard's utterances in record order.
      measured: what `measure` found for each of them.

    Returns:
      The number of records written.

    Raises:
      AudioChanged: a file no longer reads as it did when measured.
    """

    def records() -> Iterator[tuple[str, bytes]]:
        for source, expected in zip(sources, measured, strict=True):
            try:
                example = _example(reading, source, checked=True)
            except (audio_lib.AudioError, RuntimeError, OSError) as err:
                raise AudioChanged(f"{source.path}: can no longer be read ({err})") from None
            record = tf_example.serialize(reading.fields, example)
            found = Measured(example[reading.length_field], len(record))
            if found != expected:
                raise AudioChanged(f"{source.path}: was {expected}, now {found}")
            yield source.key, record

    if reading.file_format == file_adapters.FileFormat.ARRAY_RECORD.value:
        _write_array_record(path, (record for _, record in records()))
    else:  # TFDS's own adapter for the other formats
        adapter = file_adapters.ADAPTER_FOR_FORMAT[file_adapters.FileFormat(reading.file_format)]
        adapter.write_examples(path, records())
    return len(sources)


# TFDS's array_record options (one record per chunk, for random access) with zstd level 1
# where TFDS leaves zstd's default 3: on audio records level 3 took 46 % of a build and
# compressed them to 0.327 of their size, level 1 writes a third faster and gives 0.331
# (BENCHMARKS.md, "Preparing a corpus"). Readers take the options from the file header.
ARRAY_RECORD_OPTIONS = "group_size:1,zstd:1"


def _write_array_record(path: str, records: Iterator[bytes]) -> None:
    from array_record.python import array_record_module

    writer = array_record_module.ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS)
    try:
        for record in records:
            writer.write(record)
    finally:
        writer.close()
