"""The environment the settings are read from, and the re-exec that takes secrets out of it.

A process's environment block is written once, by ``execve``, and ``/proc/<pid>/environ``
shows that block for the life of the process image: ``os.environ.pop`` and ``unsetenv``
change a copy in the C library, never what ``/proc`` shows (to the same user, to root, to a
core dump). So a miner started with ``AITBC_MINER_MINER__KEY`` (or any other settings
variable, any of which may carry a secret: ``AITBC_MINER_MINER='{"key": ...}'``,
``AITBC_MINER_RUNNERS__SECRETS__...``, the variable ``identity.token.pin_env`` names) does
this before anything else:

1. it writes those variables into a sealed anonymous memory file (``memfd``), not on disk
   (``host.start`` does this first, before the heavy imports; the CLI does it once more
   when the settings name a ``pin_env`` variable still in the environment);
2. it ``execve``s its own command line again, with the same PID (systemd's notify socket,
   watchdog and main-PID tracking follow it), with an environment without them, plus
   ``AITBC_MINER_HANDOFF_FD=<n>`` naming the memory file, which the new image inherits;
3. the new image reads the variables back, closes the file, and keeps them in this
   module's memory: :func:`settings_environment` (``os.environ`` plus them) is what
   ``load_settings`` reads, at start and on every reload, so nothing else changes. They
   never go back into ``os.environ``, which is what a child would inherit.

Standard library only: the entry point runs this before importing anything heavy.

Nothing secret passes through argv (``cmdline`` is world-readable) or the new environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterable, Mapping

ENV_PREFIX = "AITBC_MINER_"
#: Names the memory file holding the handed-over variables (a number, not a secret).
HANDOFF_FD_VAR = "AITBC_MINER_HANDOFF_FD"
#: Variables that stay: they name a file and hold no secret.
_KEPT = frozenset({"AITBC_MINER_CONFIG", HANDOFF_FD_VAR})
_MEMFD_NAME = "aitbc-miner-settings"
_MAX_BYTES = 1 << 20

_handed: dict[str, str] = {}


class HandoffError(Exception):
    """The handed-over variables cannot be read back; ``str()`` is one line, never a value."""


def settings_environment() -> dict[str, str]:
    """``os.environ`` plus the variables handed over across the re-exec (those win)."""
    return {**os.environ, **_handed}


def variable(name: str) -> str | None:
    """One variable of :func:`settings_environment` (e.g. the one ``pin_env`` names)."""
    return _handed.get(name, os.environ.get(name))


def handed_over() -> list[str]:
    """The names (never the values) of the variables taken out of the environment."""
    return sorted(_handed)


def secret_variables(extra: Iterable[str] = ()) -> list[str]:
    """The variables of this process's environment to move out of it: every settings
    variable (``AITBC_MINER_*`` but the config path) and the ``extra`` ones named."""
    wanted = {name for name in extra if name}
    return sorted(name for name in os.environ
                  if (name.upper().startswith(ENV_PREFIX) and name.upper() not in _KEPT)
                  or name in wanted)


def reexec_without(names: Iterable[str]) -> None:
    """``execve`` this command again, same PID, without the variables ``names``; they reach
    the new image through an inherited memory file. Returns only when there is nothing to
    move.

    Raises:
        OSError: the memory file cannot be made or the exec fails (the caller stops).
    """
    moved = {name: os.environ[name] for name in names if name in os.environ}
    if not moved:
        return
    blob = json.dumps({**_handed, **moved}).encode()  # a second hop carries the first's
    fd = os.memfd_create(_MEMFD_NAME, os.MFD_ALLOW_SEALING)  # no MFD_CLOEXEC: it is inherited
    try:
        os.set_inheritable(fd, True)
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        os.lseek(fd, 0, os.SEEK_SET)
        env = {k: v for k, v in os.environ.items() if k not in moved}
        env[HANDOFF_FD_VAR] = str(fd)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        argv = list(sys.orig_argv)
        os.execve(sys.executable, argv, env)
    finally:  # reached only when the exec failed
        os.close(fd)


def receive_handoff(environ: Mapping[str, str] | None = None) -> None:
    """In the new image: read the handed-over variables (if any) and close their file.

    Raises:
        HandoffError: the variable names no memory file of ours, or its content is bad.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(HANDOFF_FD_VAR)
    if raw is None:
        return
    os.environ.pop(HANDOFF_FD_VAR, None)  # the children's copy; /proc keeps a number only
    if not raw.isdigit():
        raise HandoffError(f"{HANDOFF_FD_VAR} must be a file descriptor number")
    fd = int(raw)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        raise HandoffError(f"{HANDOFF_FD_VAR}={fd} is not an open file") from None
    if not target.startswith(f"/memfd:{_MEMFD_NAME}"):
        raise HandoffError(f"{HANDOFF_FD_VAR}={fd} is not the miner's hand-over file")
    try:
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_BYTES:
                raise HandoffError("the hand-over file is too large")
    finally:
        os.close(fd)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError:
        raise HandoffError("the hand-over file is not JSON") from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise HandoffError("the hand-over file is not a mapping of names to strings")
    _handed.update(data)
