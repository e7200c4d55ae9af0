"""Checkpoints you can trust: Orbax saves sealed by a checksum manifest.

Every save goes to `<name>.unfinished`, gets a manifest (size and sha256 of every file,
written once Orbax has finished, atomically), and only then is renamed to its final name.
So a folder under its final name is always a finished save, and every restore checks the
manifest first: flipped bytes, missing or extra files are caught before a single array is
read. Leftovers of a killed save (`*.unfinished`, Orbax's `*.orbax-checkpoint-tmp-*`) are
removed before the next save and never read.

A training run keeps two folders side by side:

* `<dir>/latest/<step>`: the whole train state plus JSON metadata (data-iterator state,
  loop counters), for resuming. The newest `keep_latest` (default 2) steps are kept; when the
  newest is damaged, the run resumes from the newest one that verifies, with a warning that
  names the damaged step.
* `<dir>/best/<step>`: the state of the best evaluation so far (one step).

Saving a step that already exists and verifies is a no-op, so a run killed between saving
`best` and `latest` repeats the same save on resume without error; a step that exists but
fails verification is deleted and saved again.

`save_tree` / `restore_tree` give the same guarantees to one pytree saved outside a training
run (e.g. the fine-tuned model's best variables).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from papt_jax.errors import UserError
from papt_jax.models.stack import layout_of, to_layout

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.sha256.json"
MANIFEST_FORMAT = "papt_jax checkpoint manifest 1"
UNFINISHED_SUFFIX = ".unfinished"
REPLACED_SUFFIX = ".replaced"
# Orbax's own temporary folders (`<name>.orbax-checkpoint-tmp-<n>`) of a killed save.
_ORBAX_TMP = ".orbax-checkpoint-tmp"
_STEP_NAME = re.compile(r"^\d+$")
_CHUNK = 1 << 20


class CheckpointError(UserError):
    """A checkpoint that should be there is missing or damaged, with no good one to use."""


# --- Manifest ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every file under `directory` except the manifest, as sorted '/'-joined relative paths."""
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = Path(root, name).relative_to(directory).as_posix()
            if rel != MANIFEST_FILE:
                out.append(rel)
    return sorted(out)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: str | os.PathLike) -> None:
    """Writes `<directory>/manifest.sha256.json`: size and sha256 of every file below it.

    Written to a temporary name, synced, then renamed, so the manifest is whole or absent.
    """
    directory = Path(directory)
    files = {}
    for rel in _files(directory):
        path = directory / rel
        files[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    tmp = directory / (MANIFEST_FILE + ".tmp")
    with tmp.open("w") as f:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST_FILE)
    _fsync_dir(directory)


def manifest_problem(directory: str | os.PathLike, contents: bool = True) -> str | None:
    """What is wrong with a saved folder, checked against its manifest; None when it verifies.

    Args:
      directory: the saved folder.
      contents: also compare every file's SHA-256 (False: presence and sizes only, a quick
        check that reads no file but the manifest).

    Returns:
      None, or one sentence: no folder, no manifest (the save never finished), an
      unreadable manifest, missing, extra, resized or changed files.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return "it does not exist"
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return f"it has no {MANIFEST_FILE} (the save did not finish, or it was made without one)"
    try:
        recorded = json.loads(manifest.read_text())
        if recorded.get("format") != MANIFEST_FORMAT:
            return f"{MANIFEST_FILE} has an unknown format {recorded.get('format')!r}"
        expected = recorded["files"]
    except (ValueError, KeyError, AttributeError) as e:
        return f"{MANIFEST_FILE} is unreadable ({e})"
    present = set(_files(directory))
    missing = sorted(set(expected) - present)
    if missing:
        return f"{len(missing)} file(s) are missing, e.g. {missing[0]}"
    extra = sorted(present - set(expected))
    if extra:
        return f"{len(extra)} file(s) were added after the save, e.g. {extra[0]}"
    for rel, entry in expected.items():
        path = directory / rel
        if path.stat().st_size != entry["bytes"]:
            return f"{rel} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
        if contents and _sha256(path) != entry["sha256"]:
            return f"{rel} does not match its sha256 checksum (its bytes changed)"
    return None


# --- Sealed saves -----------------------------------------------------------------------------


def _is_primary() -> bool:
    return jax.process_index() == 0


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _is_leftover(name: str, final: str) -> bool:
    """Whether `name` is a killed save's leftover of the folder `final`."""
    return name.startswith(final + UNFINISHED_SUFFIX) or name.startswith(final + _ORBAX_TMP)


def _remove_leftovers(parent: Path, final: str) -> None:
    """Deletes `<final>.unfinished*` and Orbax tmp folders of `final` in `parent` (primary)."""
    if not _is_primary() or not parent.is_dir():
        return
    for entry in parent.iterdir():
        if _is_leftover(entry.name, final) or entry.name == final + REPLACED_SUFFIX:
            log.info("removing %s, left behind by a killed save", entry)
            _rmtree(entry)


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# Orbax splits a replicated array among its replicas so that each writes a part
# ("replica-parallel" saving), one device-side slice per part. That pays for large arrays on
# many accelerators; for the many small leaves of a train state it is only overhead (a
# tiny model's 10 saves over 8 CPU devices: 6.1 s, 7,568 slices; 1.7 s without). Parts are
# split only when each is at least this large; the bytes written are the same either way.
MIN_REPLICA_PARALLEL_BYTES = 1 << 20


@functools.cache
def _use_replica_parallel_for_large_arrays() -> None:
    """Registers Orbax's array handler with the threshold above (once per process; the
    registry is Orbax's global one, which its standard and composite handlers read).

    Configured as Orbax's default handler is (with an array metadata store, so every save
    keeps its `array_metadatas/`) but for the threshold.
    """
    from orbax.checkpoint._src.metadata import array_metadata_store  # not re-exported

    # Orbax warns on every override ("Type handler registry type ... overriding"), this
    # deliberate one too: a line in every run's console that reads like a problem.
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_drop_override_notice)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                array_metadata_store=array_metadata_store.Store(),
                min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_BYTES,
            ),
            override=True,
        )
    finally:
        absl_logger.removeFilter(_drop_override_notice)


def _drop_override_notice(record: logging.LogRecord) -> bool:
    """A logging filter: False for Orbax's notice that a type handler was overridden."""
    return not record.getMessage().startswith("Type handler registry type")


def _save_sealed(path: Path, handler, args) -> None:
    """Orbax-saves to `<path>.unfinished`, writes the manifest, renames it to `path`.

    `path` must not exist. A kill at any point leaves either nothing under `path` or a
    finished save with its manifest.
    """
    _use_replica_parallel_for_large_arrays()
    partial = path.with_name(path.name + UNFINISHED_SUFFIX)
    _remove_leftovers(path.parent, path.name)
    _sync(f"papt_jax_save_start:{path}")
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(partial, args=args)  # blocking: every file is written on return
    if _is_primary():
        write_manifest(partial)
        os.rename(partial, path)
        _fsync_dir(path.parent)
    _sync(f"papt_jax_save_done:{path}")


def _abstract(tree):
    """Shape/dtype/sharding targets so Orbax restores onto the same devices."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _layout_target(item_dir: Path, target):
    """The Orbax target for a saved pytree, and how to turn what it restores into `target`.

    Trees saved before the Transformer layers were scanned hold them one by one
    (`layers_{i}`); a scanned model's target stacks them (`models.stack`). The saved
    layout is read from Orbax's metadata, the tree restored as saved, then laid out as the
    target asks and placed on the target's shardings.

    Returns:
      (abstract target for Orbax, function from the restored tree to the target's layout).
    """
    abstract = _abstract(target)
    wanted = layout_of(abstract)
    if wanted is None:
        return abstract, lambda tree: tree
    # The handler's own metadata (the saved tree): a Checkpointer would also look for a
    # step's metadata file in this item folder, which has none, and warn that it is missing.
    handler = ocp.StandardCheckpointHandler()
    try:
        saved = layout_of(handler.metadata(item_dir).tree)
    finally:
        handler.close()
    if saved is None or saved == wanted:
        return abstract, lambda tree: tree

    def finish(tree):
        tree = to_layout(tree, wanted)
        return jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), tree, abstract)

    how = {True: "stacked", False: "one by one"}
    log.info("%s holds the layers %s; restored %s", item_dir, how[saved], how[wanted])
    return to_layout(abstract, saved), finish


def _restore_composite(path: Path, target_state):
    items = {"meta": ocp.args.JsonRestore()}
    finish = None
    if target_state is not None:
        target, finish = _layout_target(path / "state", target_state)
        items["state"] = ocp.args.StandardRestore(target)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(**items))
    state = finish(restored.state) if target_state is not None else None
    return state, dict(restored.meta)


# --- One pytree outside a training run --------------------------------------------------------


def save_tree(path: str | os.PathLike, tree) -> None:
    """Saves one pytree of arrays to the folder `path`, atomically, with a manifest.

    Whatever was at `path` is replaced. The new save is finished (manifest included) in a
    sibling folder before it is renamed into place; a kill leaves the old folder, the new
    one, or (in the instant between two renames) none, never a torn one.

    Args:
      path: Destination folder (its parent is created).
      tree: Pytree of arrays (NumPy or jax).
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".new")
    old = path.with_name(path.name + REPLACED_SUFFIX)
    if _is_primary():
        for leftover in (staged, old):  # a killed earlier save_tree
            _rmtree(leftover)
    _save_sealed(staged, ocp.StandardCheckpointHandler(), ocp.args.StandardSave(tree))
    if _is_primary():
        if path.exists() or path.is_symlink():
            os.rename(path, old)
        os.rename(staged, path)
        _fsync_dir(path.parent)
        _rmtree(old)
    _sync(f"papt_jax_save_tree:{path}")


def restore_tree(path: str | os.PathLike, target=None):
    """Restores a pytree written by `save_tree`, after checking its manifest.

    Args:
      path: The folder given to `save_tree`.
      target: Optional pytree of arrays or `jax.ShapeDtypeStruct`s giving the shapes,
        dtypes and shardings to restore onto (Transformer layers stacked or one by one
        as the target has them, whichever way they were saved); None restores as saved.

    Returns:
      The pytree.

    Raises:
      CheckpointError: when `path` is missing, fails its manifest, or cannot be restored.
    """
    path = Path(path).absolute()
    problem = manifest_problem(path)
    if problem is not None:
        raise CheckpointError(
            f"the saved arrays in {path} cannot be used: {problem}",
            hint="rerun the step that writes this folder (delete the folder first)",
        )
    try:
        if target is None:
            abstract, finish = None, lambda tree: tree
        else:
            abstract, finish = _layout_target(path, target)
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            return finish(checkpointer.restore(path, args=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # noqa: BLE001 - Orbax raises many types; the path is what matters
        raise CheckpointError(
            f"the saved arrays in {path} verify but cannot be restored: {type(e).__name__}: {e}",
            hint="the model shape may differ from the one that was saved",
        ) from e


# --- A training run's checkpoints -------------------------------------------------------------


class Checkpoints:
    """Latest (last `keep_latest` steps) and best (one step) checkpoints of one training run.

    Attributes:
      directory: Absolute path of the run's checkpoint folder.
      latest_dir: `<directory>/latest`.
      best_dir: `<directory>/best`.
    """

    def __init__(self, directory: str | os.PathLike, keep_latest: int = 2):
        if keep_latest < 1:
            raise ValueError(f"keep_latest must be >= 1, got {keep_latest}")
        self.directory = os.path.abspath(directory)
        self.latest_dir = Path(self.directory, "latest")
        self.best_dir = Path(self.directory, "best")
        self.keep_latest = keep_latest
        if _is_primary():
            for folder in (self.latest_dir, self.best_dir):
                folder.mkdir(parents=True, exist_ok=True)
                self._remove_all_leftovers(folder)
        _sync(f"papt_jax_checkpoints_open:{self.directory}")

    @staticmethod
    def _remove_all_leftovers(folder: Path) -> None:
        for entry in folder.iterdir():
            if not _STEP_NAME.match(entry.name):
                final = entry.name.split(".", 1)[0]
                if _STEP_NAME.match(final) and _is_leftover(entry.name, final):
                    log.info("removing %s, left behind by a killed save", entry)
                    _rmtree(entry)

    @staticmethod
    def steps(folder: Path) -> list[int]:
        """Saved steps in `folder` (finished saves only), ascending."""
        if not folder.is_dir():
            return []
        return sorted(int(e.name) for e in folder.iterdir() if _STEP_NAME.match(e.name))

    def latest_steps(self) -> list[int]:
        return self.steps(self.latest_dir)

    def best_steps(self) -> list[int]:
        return self.steps(self.best_dir)

    def describe(self) -> str:
        """One sentence on what `latest/` holds, for error messages (no verification)."""
        steps = self.latest_steps()
        if not steps:
            return (
                f"no checkpoint has been saved yet ({self.latest_dir} is empty), so a rerun "
                "starts from the beginning"
            )
        listed = ", ".join(str(s) for s in steps)
        return f"{self.latest_dir} holds step(s) {listed}; a rerun resumes from the newest good one"

    # Saving.

    def _save(self, folder: Path, step: int, state, meta: dict[str, Any]) -> bool:
        """Saves one step unless it is already there and verifies; True when it wrote."""
        path = folder / str(int(step))
        if path.exists():
            problem = manifest_problem(path)
            if problem is None:
                log.info("step %d is already saved and verified in %s; kept", step, folder)
                return False
            log.warning("replacing damaged step %d in %s: %s", step, folder, problem)
            if _is_primary():
                _rmtree(path)
            _sync(f"papt_jax_replace:{path}")
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        _save_sealed(path, ocp.CompositeCheckpointHandler(), args)
        return True

    def _prune(self, folder: Path, step: int, keep: int) -> None:
        """Keeps the newest `keep` steps up to `step`; later steps are an abandoned future."""
        if _is_primary():
            steps = self.steps(folder)
            ahead = [s for s in steps if s > step]
            behind = [s for s in steps if s <= step]
            for s in ahead + behind[:-keep]:
                _rmtree(folder / str(s))
        _sync(f"papt_jax_prune:{folder}:{step}")

    def save_latest(self, step: int, state, meta: dict[str, Any]) -> None:
        """Saves the full state and JSON metadata (data-iterator state, counters)."""
        self._save(self.latest_dir, step, state, meta)
        self._prune(self.latest_dir, step, self.keep_latest)

    def save_best(self, step: int, state, meta: dict[str, Any]) -> None:
        """Saves the state of a new best evaluation, with its scores in `meta`."""
        self._save(self.best_dir, step, state, meta)
        self._prune(self.best_dir, step, 1)

    # Restoring.

    def _try_restore(self, folder: Path, step: int, target_state):
        """((state, meta), None) or (None, what is wrong with the step)."""
        path = folder / str(step)
        problem = manifest_problem(path)
        if problem is not None:
            return None, problem
        try:
            return _restore_composite(path, target_state), None
        except Exception as e:  # noqa: BLE001 - any failure makes this step unusable
            return None, f"it verifies but does not restore: {type(e).__name__}: {e}"

    def restore_latest(self, target_state):
        """(state, meta) of the newest latest step that verifies and restores, or None.

        A damaged newer step is skipped with a warning that names it.

        Raises:
          CheckpointError: when steps exist but none of them is usable.
        """
        damaged = []
        for step in reversed(self.latest_steps()):
            restored, problem = self._try_restore(self.latest_dir, step, target_state)
            if restored is None:
                damaged.append(f"step {step}: {problem}")
                log.warning(
                    "checkpoint step %d in %s is damaged: %s", step, self.latest_dir, problem
                )
                continue
            if damaged:
                log.warning(
                    "resuming from step %d in %s instead of the damaged newer step(s): %s",
                    step,
                    self.latest_dir,
                    "; ".join(damaged),
                )
            return restored
        if damaged:
            raise CheckpointError(
                f"no usable checkpoint in {self.latest_dir}: " + "; ".join(damaged),
                hint=(
                    f"delete {self.directory} to train this stage from the beginning, or "
                    "restore the folder from a backup"
                ),
            )
        return None

    def restore_best(self, target_state, step: int | None = None):
        """(state, meta) of the best checkpoint, or None when none was ever saved.

        Args:
          target_state: Pytree with the shapes/shardings to restore onto.
          step: The step the run recorded as best; checked against what is on disk. When
            `best/<step>` is damaged but `latest/<step>` verifies, the state comes from there.

        Raises:
          CheckpointError: when the best state is missing or damaged and no copy verifies.
        """
        steps = self.best_steps()
        if step is None:
            if not steps:
                return None
            step = steps[-1]
        restored, problem = self._try_restore(self.best_dir, step, target_state)
        if restored is not None:
            return restored
        copy, _ = self._try_restore(self.latest_dir, step, target_state)
        if copy is not None:
            log.warning(
                "best checkpoint step %d in %s is unusable (%s); using its copy in %s",
                step,
                self.best_dir,
                problem,
                self.latest_dir,
            )
            return copy
        raise CheckpointError(
            f"the best checkpoint (step {step}) in {self.best_dir} cannot be used: {problem}",
            hint=f"delete {self.directory} to train this stage again",
        )

    def best_meta(self) -> dict[str, Any] | None:
        """JSON metadata (step and scores) of the best checkpoint, or None."""
        steps = self.best_steps()
        if not steps:
            return None
        path = self.best_dir / str(steps[-1])
        problem = manifest_problem(path)
        if problem is not None:
            raise CheckpointError(f"the best checkpoint {path} cannot be used: {problem}")
        return _restore_composite(path, None)[1]

    def close(self) -> None:
        """Nothing stays open between saves; kept so callers can close uniformly."""
