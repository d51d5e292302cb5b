"""Files that hold secrets (a token PIN, a rig key): read only while private, written 0600.

A secret file whose group or others may read it is refused, not read: by the time we
notice, it may have been copied; the operator fixes the mode (or makes a new key).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class PrivateFileError(Exception):
    """The file is missing, unreadable or not private; ``str()`` is one line."""


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``, which must be a regular file no group or other can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PrivateFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PrivateFileError(f"{what} {path} is not a regular file")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise PrivateFileError(
                f"{what} {path} is readable by {'others' if mode & 0o007 else 'its group'} "
                f"(mode {mode:04o}); refusing it. Run: chmod 600 {path}")
        return file.read()


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``, mode 0600, atomically; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.link(temp, path)  # fails if path exists: an existing key is never replaced
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
