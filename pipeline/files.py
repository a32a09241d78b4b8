"""Small file helpers shared by the stages: nothing is ever left half-written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO


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
