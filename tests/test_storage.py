"""papt_jax.storage: output checks before work, atomic writes, OS failures as one line."""

from __future__ import annotations

import errno
import os
import resource
import signal

import pytest

from papt_jax import storage


def test_a_file_size_limit_is_named_with_its_path(tmp_path):
    """The real EFBIG: a write past RLIMIT_FSIZE (`ulimit -f`), as a full disk would fail."""
    target = tmp_path / "big.bin"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Python's default: ignored
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
        with pytest.raises(OSError) as info, open(target, "wb", buffering=0) as f:
            while True:
                f.write(b"x" * 100)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert info.value.errno == errno.EFBIG
    failure = storage.os_failure(RuntimeError("save failed").with_traceback(None))
    assert failure is None
    try:
        raise RuntimeError("save failed") from info.value
    except RuntimeError as wrapped:
        failure = storage.os_failure(wrapped)
    assert failure is not None and "file too large" in failure.message
    assert "rerun the same command" in failure.hint


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on the device (disk full)"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_deep_in_a_chain_become_one_line(code, words):
    cause = OSError(code, os.strerror(code), "/data/run/checkpoints/7/state")
    try:
        try:
            raise cause
        except OSError as e:
            raise ValueError("orbax: save failed") from e
    except ValueError as wrapped:
        failure = storage.os_failure(wrapped)
    assert failure is not None
    assert failure.message == f"cannot write /data/run/checkpoints/7/state: {words}"


def test_a_library_error_that_only_says_it_in_words_is_recognised():
    error = RuntimeError(
        "RESOURCE_EXHAUSTED: Error writing file: No space left on device [OS error: 28]"
    )
    failure = storage.os_failure(error)
    assert failure is not None and failure.message.startswith("no space left on the device")


def test_other_errors_are_left_alone():
    assert storage.os_failure(ValueError("shapes (3,) and (4,) differ")) is None
    assert storage.os_failure(FileNotFoundError(errno.ENOENT, "No such file", "x")) is None


def test_an_output_file_that_is_an_input_is_refused(tmp_path):
    victim = tmp_path / "victim.wav"
    victim.write_bytes(b"RIFF")
    link = tmp_path / "link.wav"
    link.symlink_to(victim)
    for out in (victim, link):
        with pytest.raises(storage.OutputError, match="is one of the inputs"):
            storage.check_output_file(out, "--out", [victim])
    assert victim.read_bytes() == b"RIFF"
    with pytest.raises(storage.OutputError, match="is a folder"):
        storage.check_output_file(tmp_path, "--out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(storage.OutputError, match="is a file, not a folder"):
        storage.check_output_file(tmp_path / "file" / "out.csv", "--out")
    assert storage.check_output_file(tmp_path / "new" / "out.csv", "--out", [victim]).is_absolute()


def test_an_output_folder_that_holds_an_input_is_refused(tmp_path):
    source = tmp_path / "runs" / "demo"
    source.mkdir(parents=True)
    for out in (source, tmp_path / "runs"):
        with pytest.raises(storage.OutputError, match="an input"):
            storage.check_output_dir(out, "--out", [source])
    storage.check_output_dir(tmp_path / "models" / "demo", "--out", [source])


def test_write_atomic_keeps_the_earlier_file_when_writing_fails(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("earlier\n")

    def fails(f):
        f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        storage.write_atomic(path, fails)
    assert path.read_text() == "earlier\n"
    assert not list(tmp_path.glob("*.partial"))
    storage.write_atomic(path, lambda f: f.write("new\n"))
    assert path.read_text() == "new\n"


def test_staged_dir_keeps_the_earlier_folder_until_the_new_one_is_whole(tmp_path):
    final = tmp_path / "export"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), storage.staged_dir(final) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("disk full")
    assert (final / "old.txt").read_text() == "old"
    with storage.staged_dir(final) as tmp:
        assert list(tmp.iterdir()) == []  # the failed attempt's leftovers are gone
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
