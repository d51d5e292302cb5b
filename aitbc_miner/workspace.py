"""Per-job folders ``jobs/<job_id>/`` (job.json, result.json; runners add their logs) and
their retention.

Everything here is plain blocking file I/O; the engine calls it through
``asyncio.to_thread`` so the event loop never waits on a disk. A write that fails
(``OSError``: disk full, no descriptors, no permission) removes what it half wrote and
raises; the engine turns that into the job's failure (see docs/disk.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


def job_dir(root: Path, job_id: str) -> Path:
    """The job's folder; ids are sanitised so no job id can point outside ``root``."""
    name = SAFE_ID.sub("_", job_id)[:128] or "_"
    if name in (".", ".."):
        name = "_" + name
    return root / name


def prepare(root: Path, job_id: str, job: Mapping[str, Any]) -> Path:
    path = job_dir(root, job_id)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_whole(path / "job.json", job)
    return path


def write_outcome(root: Path, job_id: str, outcome: Mapping[str, Any]) -> None:
    path = job_dir(root, job_id)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path / "result.json.tmp"
    _write_whole(tmp, outcome)
    tmp.replace(path / "result.json")


def _write_whole(file: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON; on failure leave no partial file behind (it would only hold
    on to the space a full disk is short of)."""
    try:
        file.write_text(json.dumps(data, indent=2, default=str))
    except OSError:
        with contextlib.suppress(OSError):
            file.unlink(missing_ok=True)
        raise


def free_bytes(root: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``root``."""
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


def prune(root: Path, keep_jobs: int, keep_days: float, active: Collection[str]) -> list[str]:
    """Delete the folders of finished jobs beyond the newest ``keep_jobs`` or older than
    ``keep_days``; folders of ``active`` jobs are never touched. Returns what was removed."""
    if not root.is_dir():
        return []
    protected = {job_dir(root, j).name for j in active}
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name not in protected),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    cutoff = time.time() - keep_days * 86400
    removed = []
    for index, folder in enumerate(folders):
        if index >= keep_jobs or folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed
