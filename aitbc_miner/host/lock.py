"""One state dir, one miner: an exclusive lock on ``<state dir>/miner.lock``.

Two miners on one journal would claim, deliver and recover each other's jobs, and the
second would take over the first one's control socket. The lock is ``flock``, taken
before anything else touches the state dir and held until the process exits (the kernel
drops it then, however the process ends, so a stale file never blocks a restart). The
file holds the holder's pid, for the message the loser prints.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_NAME = "miner.lock"


class AlreadyRunning(Exception):
    """Another live process holds the state dir; ``str()`` is one line naming it."""


class StateLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock or raise :class:`AlreadyRunning` at once (never waits)."""
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = f"pid {holder}" if holder else "another process"
            raise AlreadyRunning(
                f"another miner ({who}) is running on the state dir {state_dir} "
                f"(it holds {path}); one state dir, one miner") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock early (exiting drops it too)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
