"""Atomic file writes: every artifact a later stage reads appears whole or not at all.

A write goes to a temp file in the same directory, is flushed and fsync'ed, then renamed over the target, so a
SIGKILL, a full disk or a read-only directory never leaves a truncated file where a reader would find it.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from comp.core.errors import CompError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on any error it is removed."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts should get the usual permissions
    except OSError as err:
        raise _io_error(target, err) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        # Again after writing: a library may have replaced the file with its own (safetensors: mode 0600).
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        fault_point(target)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _io_error(target, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fault_point(target: Path) -> None:
    """Fault injection for tests: `COMP_FAULT_KILL=<glob>` SIGKILLs this process just before renaming a matching
    file (or a run folder, `replace_dir`) into place (the worst moment: the new one is complete, the target not yet
    replaced)."""
    pattern = os.environ.get("COMP_FAULT_KILL")
    if pattern and fnmatch.fnmatch(target.name, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


def library_error(err: Exception) -> OSError:
    """A library's failed write as the OSError it wraps, so `atomic_path` words it like any other: safetensors
    raises SafetensorError("... I/O error: File too large (os error 27)")."""
    import re

    found = re.search(r"(?:os error |code: |Errno )(\d+)", str(err))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code) if found else str(err))


def _io_error(target: Path, err: OSError) -> CompError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "the disk is full (or a file-size limit was reached); free some space and run the command again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the directory is not writable; fix its permissions or run from a writable workspace"
    else:
        why = err.strerror or str(err)
    return CompError(f"could not write {target}: {why} (nothing was changed there)")


@contextmanager
def locked(lock: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock file `lock` while the block runs: writers that read, change and rewrite a shared file
    (the ledger) take it so two processes never both append to the same old copy and lose a row. flock, so the
    kernel releases it when the process dies: a killed writer never leaves it held."""
    import fcntl

    lock = Path(lock)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise _io_error(lock, err) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame, **to_csv_kwargs) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)
