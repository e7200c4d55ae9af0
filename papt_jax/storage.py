"""Writing a user's files safely: outputs checked before any work, written under a
temporary name and renamed, and operating-system failures told as one line.

* `check_output_file` / `check_output_dir` refuse, before a command does its work, an output
  that is one of its inputs, a folder where a file is expected (or the reverse), or a place
  that cannot be written (read-only file system, no permission, a parent that is a file).
* `write_atomic` writes a file under `<name>.partial` and renames it into place, so a failed
  or killed run leaves the earlier file intact (or none), never half of one; `staged_dir`
  does the same for a folder.
* `os_failure` turns an exception caused by the operating system refusing a write (disk
  full, file-size limit, read-only file system, permission denied, a path through a file)
  into a `StorageError`, wherever it was raised (Orbax and TFDS wrap them), so the command
  line prints one `error:` line instead of pages of traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from papt_jax.errors import UserError

PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"

# errno -> (what happened, what to do).
_FULL_HINT = (
    "free some space (or raise the limit), then rerun the same command: finished work is kept"
)
_WRITE_HINT = "choose a place you can write to, or change its permissions"
_OS_PROBLEMS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device (disk full)", _FULL_HINT),
    errno.EDQUOT: ("disk quota exceeded", _FULL_HINT),
    errno.EFBIG: ("file too large (the file-size limit, ulimit -f, was reached)", _FULL_HINT),
    errno.EROFS: ("read-only file system", _WRITE_HINT),
    errno.EACCES: ("permission denied", _WRITE_HINT),
    errno.EPERM: ("operation not permitted", _WRITE_HINT),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
}
# The same failures as libraries outside Python (tensorstore, array_record, Riegeli) word them.
_OS_TEXT = {
    errno.ENOSPC: re.compile(r"no space left on device|\bENOSPC\b", re.I),
    errno.EDQUOT: re.compile(r"disk quota exceeded|\bEDQUOT\b", re.I),
    errno.EFBIG: re.compile(r"file too large|\bEFBIG\b", re.I),
    errno.EROFS: re.compile(r"read-only file system|\bEROFS\b", re.I),
}
_QUOTED_PATH = re.compile(r"[\"'](/[^\"']+)[\"']")


class StorageError(UserError, OSError):
    """The operating system refused to store or create a file (named in the message)."""


class OutputError(UserError, ValueError):
    """A command's output path would destroy an input or cannot be written."""


# --- Operating-system failures ----------------------------------------------------------


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """`exc`, its causes and contexts, and the members of exception groups, once each."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        todo += list(getattr(e, "exceptions", ()) or ())


def _first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def os_failure(exc: BaseException) -> StorageError | None:
    """The `StorageError` for an exception caused by a refused write, or None.

    Looks through the causes and contexts of `exc` for an `OSError` with one of the errno
    values above (its `filename` names the path), then for the same failures in the text of
    errors raised by libraries outside Python.
    """
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, StorageError):
            return e
        if isinstance(e, OSError) and e.errno in _OS_PROBLEMS:
            what, hint = _OS_PROBLEMS[e.errno]
            path = e.filename if e.filename is not None else e.filename2
            if path is not None:
                return StorageError(f"cannot write {path}: {what}", hint=hint)
            # No path on the error itself: the outermost message usually names the file.
            context = f" ({_first_line(exc)})" if e is not exc and str(exc).strip() else ""
            return StorageError(f"a write failed: {what}{context}", hint=hint)
    for e in chain:
        for code, pattern in _OS_TEXT.items():
            if pattern.search(str(e)):
                what, hint = _OS_PROBLEMS[code]
                # tensorstore and the record writers quote the file they failed on.
                paths = _QUOTED_PATH.findall(str(e))
                if paths:
                    return StorageError(f"cannot write {paths[-1]}: {what}", hint=hint)
                return StorageError(f"{what}: {_first_line(e)}", hint=hint)
    return None


# --- Checks before any work --------------------------------------------------------------


def _probe(folder: Path) -> str | None:
    """Why no file can be created in the existing folder `folder`, or None."""
    probe = folder / f".papt_jax_write_test.{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        return _OS_PROBLEMS.get(e.errno, (e.strerror or str(e), ""))[0]
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def writable_dir_problem(folder: str | os.PathLike, create: bool = True) -> str | None:
    """Why `folder` cannot hold new files (created with its parents if `create`), or None."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder"
    if not folder.exists():
        if not create:
            return "does not exist"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return "cannot be created: " + _OS_PROBLEMS.get(e.errno, (e.strerror or str(e), ""))[0]
    problem = _probe(folder)
    return None if problem is None else f"is not writable: {problem}"


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _label(flag: str, path: Path) -> str:
    """ "--out=/x/y" for a flag, "the list of refused files /x/y" for anything else."""
    return f"{flag}={path}" if flag.startswith("-") else f"{flag} {path}"


def _check_place(out: Path, label: str) -> None:
    """Raises `OutputError` unless files can be created where `out` goes."""
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{label}: {parent} is a file, not a folder", hint="check the path")
    problem = _probe(parent)
    if problem is not None:
        raise OutputError(f"{label} cannot be written: {parent} is {problem}", hint=_WRITE_HINT)


def check_output_file(
    out: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuses an output file that would destroy an input or cannot be written.

    Args:
      out: the file to write (may exist: it is replaced once the new one is complete).
      flag: the flag that named it, for the message (e.g. "--out").
      inputs: files and folders the command reads; `out` may not be one of them (checked
        by identity, so links and other spellings of a path count).

    Returns:
      `out` as an absolute path.

    Raises:
      OutputError: with one line naming the flag and the path.
    """
    out = Path(out).absolute()
    label = _label(flag, out)
    if out.is_dir():
        raise OutputError(f"{label} is a folder; give a file name", hint=f"e.g. {out / 'out'}")
    for source in inputs:
        source = Path(source).absolute()
        if _same(out, source):
            raise OutputError(
                f"{label} is one of the inputs ({source}); writing it would destroy it",
                hint=f"choose another {flag}",
            )
    _check_place(out.parent, label)
    return out


def check_output_dir(
    out: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuses an output folder that is a file, is an input or contains one, or cannot be
    created.

    Args:
      out: the folder to write (whether an existing one may be replaced is the command's
        own rule).
      flag: the flag that named it.
      inputs: files and folders the command reads.

    Returns:
      `out` as an absolute path.

    Raises:
      OutputError: with one line naming the flag and the path.
    """
    out = Path(out).absolute()
    label = _label(flag, out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{label} is a file, not a folder", hint=f"choose another {flag}")
    resolved = out.resolve()
    for source in inputs:
        source = Path(source).absolute()
        if not source.exists():
            continue
        src = source.resolve()
        if src == resolved or src.is_relative_to(resolved):
            what = "is" if src == resolved else "contains"
            raise OutputError(
                f"{label} {what} an input ({source}); replacing it would destroy it",
                hint=f"choose another {flag}",
            )
    _check_place(out, label)
    return out


# --- Writing ---------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], text: bool = True) -> None:
    """Writes `path` through `write(file)` under `<path>.partial`, then renames it into place.

    A failure (disk full, a kill) leaves the earlier `path` as it was, or none, and at most
    the `.partial` file, which the next write replaces.
    """
    path = Path(path)
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(tmp, "w" if text else "wb", **({"newline": ""} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)


def remove(path: str | os.PathLike) -> None:
    """Removes a file or folder tree if it exists (a link is removed, not followed)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh, empty `<final>.partial`; when the block ends without an error it
    takes the place of `final`.

    The earlier `final` stays in place until the new folder is complete: a failure or a
    kill inside the block leaves it as it was, plus the `.partial` folder, which the next
    attempt removes first. So a half-written folder is never under the final name.
    """
    final = Path(final)
    tmp = final.with_name(final.name + PARTIAL_SUFFIX)
    old = final.with_name(final.name + REPLACED_SUFFIX)
    remove(tmp)
    remove(old)
    tmp.mkdir(parents=True)
    yield tmp
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(tmp, final)
    remove(old)
