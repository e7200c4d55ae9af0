"""One run's workdir: paths, the run lock, stage records, atomic writes, data and encoders.

Layout (see docs/architecture.md):

  WORKDIR/.lock                 held by the one run working here (host and PID inside)
  WORKDIR/config.json           the config that produced the outputs present
  WORKDIR/config_history/       earlier configs, one file each
  WORKDIR/stages/<stage>.json   a stage's completion record: fingerprint, inputs, wall time
  WORKDIR/stages/<stage>.started.json   written when a stage starts (resume checks it)
  WORKDIR/<stage>/...           the stage's outputs
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from papt_jax import storage
from papt_jax.data import batching, input_pipeline, prepare, subset
from papt_jax.data.audio import SAMPLE_RATE
from papt_jax.errors import UserError
from papt_jax.experiment import settings
from papt_jax.models.config import HubertConfig, get_preset
from papt_jax.models.hubert import HubertModel
from papt_jax.train.sharding import make_mesh

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


class WorkdirBusyError(UserError):
    """Another run holds the workdir's lock."""


class WorkdirError(UserError):
    """The workdir cannot be used: a file, read-only, or not creatable."""


def _read_json_object(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in `path`, or None (with a warning) when it is missing or is not one.

    A record cut short, not UTF-8, or valid JSON of another shape (a list, a number) counts
    as absent: the stage it describes is then not done.
    """
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        log.warning("%s is unreadable (%s); %s", path, type(e).__name__, what)
        return None
    if not isinstance(value, dict):
        log.warning("%s holds a JSON %s, not a record; %s", path, type(value).__name__, what)
        return None
    return value


def write_json_atomic(path: Path, value: Any) -> None:
    """Writes JSON to a temporary sibling and renames it into place (never half a file)."""
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps(value, indent=1, default=str))
    os.replace(tmp, path)


# A stage's folder written under a temporary name and renamed into place when complete.
atomic_dir = storage.staged_dir
remove = storage.remove


class RunLock:
    """An advisory `flock` on WORKDIR/.lock, released when the process ends (even if killed)."""

    def __init__(self, workdir: Path):
        self.path = workdir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = Path(self.path).read_text().strip() or "an unknown process"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise WorkdirBusyError(
                f"{self.path.parent} is in use by another run ({holder})",
                hint="wait for it to finish, or use another --workdir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Workspace:
    """Paths, stage records and shared resources of one run.

    Args:
      config: the validated experiment config.
      workdir: the run's folder (created if missing).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path):
        self.config = config
        self.workdir = Path(workdir).absolute()
        problem = storage.writable_dir_problem(self.workdir)
        if problem is not None:
            raise WorkdirError(
                f"--workdir={self.workdir} {problem}",
                hint="choose a folder you can write to (a new one is created)",
            )
        self.records_dir = self.workdir / "stages"
        self._mesh = None
        self._eval_buckets: tuple[int, ...] | None = None

    # --- paths ------------------------------------------------------------------------
    @property
    def corpus_dir(self) -> Path:
        if self.config.data.synthetic_preset:
            return self.workdir / "corpus"
        return Path(self.config.data.corpus_dir)

    @property
    def data_dir(self) -> Path:
        d = self.config.data.data_dir
        return Path(d).absolute() if d else self.workdir / "data"

    @property
    def dataset_dir(self) -> Path:
        return prepare.dataset_dir(self.data_dir)

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    def stage_dir(self, *parts: str) -> Path:
        path = self.path(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- stage records ----------------------------------------------------------------
    def record(self, stage: str) -> dict[str, Any] | None:
        """The completion record of `stage`, or None when it has not completed."""
        path = self.records_dir / f"{stage}.json"
        return _read_json_object(path, f"stage {stage} counts as not done")

    def discard_unreadable_records(self) -> None:
        """Removes records that are not JSON objects (warning once for each), so the stages
        they describe count as not done from here on."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):
            what = "the stage it describes counts as not done; it is removed"
            if _read_json_object(path, what) is None:
                remove(path)

    def write_record(self, stage: str, record: dict[str, Any]) -> None:
        self.records_dir.mkdir(exist_ok=True)
        write_json_atomic(self.records_dir / f"{stage}.json", record)

    def started(self, stage: str) -> dict[str, Any] | None:
        path = self.records_dir / f"{stage}.started.json"
        return _read_json_object(path, f"an earlier attempt of stage {stage} is not resumed")

    def write_started(self, stage: str, record: dict[str, Any]) -> None:
        self.records_dir.mkdir(exist_ok=True)
        write_json_atomic(self.records_dir / f"{stage}.started.json", record)

    def forget(self, stage: str) -> None:
        """Drops a stage's records (its outputs are removed by the caller)."""
        for name in (f"{stage}.json", f"{stage}.started.json"):
            remove(self.records_dir / name)

    def write_config(self) -> None:
        """config.json := this run's config; a different earlier one goes to config_history/."""
        path = self.workdir / "config.json"
        text = self.config.to_json_best_effort(indent=1, sort_keys=True)
        if path.is_file() and path.read_text() != text:
            history = self.stage_dir("config_history")
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            os.replace(path, history / f"config_{stamp}.json")
        write_json_atomic(path, json.loads(text))

    # --- devices and data ----------------------------------------------------------------
    @property
    def mesh(self):
        if self._mesh is None:
            self._mesh = make_mesh(self.config.num_devices or None)
        return self._mesh

    def num_speakers(self) -> int:
        from papt_jax.data import msp_podcast

        return len(msp_podcast.read_speakers(self.dataset_dir / "speakers.json"))

    def has_split(self, split: str) -> bool:
        return (self.dataset_dir / "index" / f"{split}.json").is_file()

    def split_speakers(self, split: str) -> int | None:
        """Number of distinct speakers in a built split (None: an index from before 0.2)."""
        speakers = self.record_speakers(split)
        return None if speakers is None else len(set(speakers))

    def record_speakers(self, split: str) -> list[str] | None:
        """Speaker id of every record of a built split, in record order (None: old index)."""
        index = json.loads((self.dataset_dir / "index" / f"{split}.json").read_text())
        return index.get("speakers")

    def _batch_options(self) -> dict[str, Any]:
        d = self.config.data
        if d.batch_seconds:
            return {"batch_size": None, "batch_seconds": float(d.batch_seconds)}
        return {"batch_size": int(d.batch_size)}

    def train_data(
        self,
        splits: str,
        targets=None,
        seed_offset: int = 0,
        speakers: set[str] | None = None,
        crop_to_shortest: bool = False,
    ):
        """Shuffled, cropped, bucketed training batches over one or more splits.

        Args:
          splits: comma-separated dataset splits, read as one.
          targets: utterance key -> frame labels (pre-training).
          seed_offset: added to the run's seed (different shuffles per stage).
          speakers: keep only these speakers' utterances (None: all).
          crop_to_shortest: crop each batch to its shortest utterance (pre-training).
        """
        d = self.config.data
        cfg = batching.PipelineConfig(
            mode="train",
            num_buckets=int(d.num_buckets),
            max_length=int(d.max_seconds * SAMPLE_RATE),
            seed=int(self.config.seed) + seed_offset,
            crop_to_shortest=crop_to_shortest,
            worker_count=int(d.worker_count),
            device_count=self.mesh.size,
            **self._batch_options(),
        )
        names = settings.csv(splits)
        if speakers is None:
            return input_pipeline.make_pipeline(self.data_dir, names, cfg, targets)
        source, index = input_pipeline.open_split(self.data_dir, names)
        of_record = [s for name in names for s in (self.record_speakers(name) or [])]
        if len(of_record) != len(index.keys):
            raise settings.ConfigError(
                f"{self.dataset_dir} was built before speaker subsets were supported",
                hint="run again with --redo=prepare",
            )
        keep = np.isin(np.asarray(of_record), sorted(speakers))
        source, index = subset.select(source, index, keep)
        return input_pipeline.BatchPipeline(source, index, cfg, targets)

    def eval_batches(self, splits: str, targets=None):
        """A callable giving one fresh, ordered, uncropped pass over `splits`, and its length."""
        cfg = batching.PipelineConfig(
            mode="eval",
            bucket_lengths=self.eval_bucket_lengths(),
            batch_size=int(self.config.data.eval_batch_size),
            device_count=self.mesh.size,
            worker_count=int(self.config.data.worker_count),
        )
        pipe = input_pipeline.make_pipeline(self.data_dir, settings.csv(splits), cfg, targets)
        return lambda: iter(pipe), pipe.batches_per_epoch

    def eval_bucket_lengths(self) -> tuple[int, ...]:
        """One bucket set for every evaluation pass, fitted on all splits, so no
        utterance is cropped and evaluation compiles the same few shapes everywhere."""
        if self._eval_buckets is None:
            splits = [s for s in settings.DATASET_SPLITS if self.has_split(s)]
            lengths = np.concatenate(
                [input_pipeline.load_index(self.data_dir, s).num_samples for s in splits]
            )
            self._eval_buckets = batching.fit_bucket_lengths(
                lengths, int(self.config.data.num_buckets)
            )
        return self._eval_buckets

    # --- encoders -----------------------------------------------------------------------
    def load_encoder(self, spec: str):
        """A `ConvertedCheckpoint` for an encoder spec (see `settings.parse_encoder_spec`)."""
        from papt_jax import convert

        parsed = settings.parse_encoder_spec(spec)
        if parsed.kind == "workdir":
            path = self.path(parsed.value, "encoder")
            if not convert.api.is_converted_dir(path):  # deleted while this run was going
                raise UserError(
                    f"the encoder of stage {parsed.value} ({path}) is missing",
                    hint=f"rerun the same command: stage {parsed.value} is then redone first",
                )
            return convert.load_converted(path)
        if parsed.kind == "converted":
            return convert.load_converted(parsed.value)
        if parsed.kind == "pytorch":
            return convert.load_pytorch_checkpoint(
                parsed.value, allow_unsafe_pickle=bool(self.config.model.allow_unsafe_pickle)
            )
        return random_encoder(get_preset(parsed.value), int(self.config.seed))


def random_encoder(config: HubertConfig, seed: int):
    """A randomly initialised encoder as a `ConvertedCheckpoint` (no pre-training head)."""
    from papt_jax.convert import ConvertedCheckpoint

    model = HubertModel(config)
    audio = jax.numpy.zeros((1, SAMPLE_RATE))
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), audio)["params"]
    return ConvertedCheckpoint(config, jax.device_get(params), None, None, "random_init")


def with_speakers(encoder, fusion: str, num_speakers: int, config: ml_collections.ConfigDict):
    """Encoder config/params with the run's compute options and a zero speaker table.

    A table of the right size already in `encoder` (an adapted encoder) is kept.
    """
    cfg = encoder.config.replace(
        dtype=config.model.dtype,
        remat=bool(config.model.remat),
        speaker_fusion=fusion,
        num_speakers=num_speakers if fusion != "none" else 0,
    )
    params = dict(encoder.params)
    params.pop("speaker_embedding", None)
    if fusion != "none":
        if encoder.config.num_speakers == num_speakers and "speaker_embedding" in encoder.params:
            params["speaker_embedding"] = encoder.params["speaker_embedding"]
        else:
            params["speaker_embedding"] = {
                "embedding": np.zeros((num_speakers, cfg.hidden_size), np.float32)
            }
    return cfg, params
