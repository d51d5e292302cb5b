"""The host side of a job's secrets: a private directory that exists only while it runs.

Secrets are files, never environment variables or arguments: both of those show in the
process table (``/proc/<pid>/environ`` to the same user, ``cmdline`` to everyone) and
leak into core dumps and child processes. Where the host allows a private mount
namespace, the files live in a tmpfs mounted inside the job's namespace only (the
launcher writes them from the spec it reads over a pipe); the host sees an empty
directory. Elsewhere they are 0400 files in a fresh 0700 directory under ``/dev/shm``
(memory, not disk). Either way the directory is removed when the job ends.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .isolation import JobUser

SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SHM = Path("/dev/shm")


@dataclass(frozen=True, slots=True)
class SecretsDir:
    """Where the job reads its secrets (``AITBC_SECRETS_DIR``), and how they get there."""

    path: Path
    mounted: bool  # True: a tmpfs inside the job's mount namespace
    values: Mapping[str, bytes]

    @classmethod
    def create(cls, values: Mapping[str, bytes], *, private_tmpfs: bool,
               mount_point: Path, owner: JobUser | None = None) -> SecretsDir:
        for name in values:
            if not SECRET_NAME.fullmatch(name):
                raise ValueError(f"secret name {name!r} is not a safe file name")
        if private_tmpfs:
            mount_point.mkdir(mode=0o700)
            return cls(mount_point, True, values)
        base = SHM if SHM.is_dir() else None
        path = Path(tempfile.mkdtemp(prefix="aitbc-secrets-", dir=base))  # mode 0700
        for name, value in values.items():
            fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
            if owner is not None:
                os.chown(path / name, owner.uid, owner.gid)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
        return cls(path, False, values)

    def spec_fields(self) -> dict[str, Any]:
        """What the launcher needs; the values only when it must write them itself."""
        if not self.mounted:
            return {}
        return {"secrets_mode": "mount", "secrets_dir": str(self.path),
                "secrets": {k: base64.b64encode(v).decode() for k, v in self.values.items()}}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
