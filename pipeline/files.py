"""Small file helpers shared by the stages: nothing is ever left half-written."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from pipeline.errors import DataError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


class atomic_output:
    """Write to a temporary file beside `path`, renamed to `path` only if the block succeeds.

    A crash or an exception leaves the previous `path` (if any) untouched and no partial file.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w") -> None:
        self.path = Path(path)
        self.mode = mode

    def __enter__(self) -> IO:
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        os.chmod(self.tmp, 0o666 & ~_umask())
        if "b" in self.mode:
            self.handle = os.fdopen(fd, self.mode)
        else:
            self.handle = os.fdopen(fd, self.mode, encoding="utf-8", newline="\n")
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)


def temp_dir_beside(path: str | os.PathLike) -> Path:
    """A new empty directory next to `path`, to be renamed onto it once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def refuse_non_empty(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise unless `path` is absent or empty, or the user passed --overwrite."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: exists and is not a directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise DataError(f"{path}: exists and is not empty; pass --overwrite to replace it")


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a temporary directory beside `path`; it replaces `path` only if the block succeeds.

    An old `path` is moved aside first and deleted only once the new one is in place.
    """
    path = Path(path)
    tmp = temp_dir_beside(path)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[Path]:
    """One writer per output: an exclusive lock on `.<name>.lock` beside `target` for the block.

    A second writer is refused at once, with the process that holds the lock named. The lock
    goes with the process (fcntl.flock), so a killed writer never leaves a stale one; the small
    lock file stays, and its text says who wrote last.
    """
    target = Path(target).resolve()  # `--out .` names its directory
    lock = target.with_name(f".{target.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DataError(f"{target}: {holder} is writing it now; wait for it to finish, or choose another "
                            "output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        try:
            yield lock
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
