"""The data disk: a job whose files cannot be written fails alone, and below a free-space
floor the miner stops claiming until space returns.

Free space is measured with one ``statvfs`` of the jobs folder, off the event loop, every
``Tuning.disk_check_s`` and at once when a job finds the disk full. Claiming stops when it
falls below ``Tuning.min_free_mb`` and resumes once it is back above the floor plus
``RESUME_MARGIN`` (so a disk hovering at the floor does not flap); each turn is one event.
"""

from __future__ import annotations

import asyncio
import errno

from .. import workspace
from ..codes import ErrorCode
from ..runners.base import JobFailed
from .core import Core
from .snapshot import DiskFloorCrossed, DiskView

#: Errnos that mean "no room here" (E_DISK); any other write error is E_INTERNAL.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
RESUME_MARGIN = 0.1  # claiming resumes at floor * 1.1
MB = 1024 * 1024


def write_failed(core: Core, exc: OSError, what: str) -> JobFailed:
    """The job's failure when writing ``what`` (``job.json``, ``result.json``) raised:
    ``E_DISK`` for a full, over-quota or read-only disk, else ``E_INTERNAL`` naming the
    errno. A full disk is measured again at once."""
    name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else "no errno"
    message = f"cannot write {what}: {name} ({exc.strerror or exc})"
    if exc.errno in DISK_FULL:
        core.wake_disk.set()
        return JobFailed(ErrorCode.E_DISK, message)
    return JobFailed(ErrorCode.E_INTERNAL, message)


async def watch_disk(core: Core) -> None:
    """Measure free space every ``disk_check_s`` (sooner when woken) for as long as the
    engine runs; the engine measures once itself before it claims anything."""
    while True:
        if await core.sleep(core.tuning.disk_check_s, core.wake_disk):
            core.wake_disk.clear()
        await check_disk(core)


async def check_disk(core: Core) -> None:
    """Measure once and update ``core.disk``; a turn across the floor emits an event and
    wakes the poller. A failed measurement keeps the last verdict."""
    floor = core.tuning.min_free_mb
    if floor <= 0:
        return
    path = str(core.workspace_root)
    try:
        free = await asyncio.to_thread(workspace.free_bytes, core.workspace_root)
    except OSError as exc:
        core.set_loop("disk", "cannot measure free space", f"{path}: {exc.strerror or exc}")
        return
    free_mb = round(free / MB, 1)
    was_low = core.disk.low
    low = free_mb < (floor * (1 + RESUME_MARGIN) if was_low else floor)
    reason = (f"data disk low: {free_mb:g} MB free on {path}, under the {floor:g} MB floor;"
              " not claiming" if low else None)
    view = DiskView(path=path, free_mb=free_mb, floor_mb=floor, low=low, reason=reason)
    if view == core.disk:
        return
    core.disk = view
    core.changed()
    if low == was_low:
        return
    core.wake_poll.set()  # the poller parks while claiming is off: let it look again
    message = (f"{reason} until it is back over {floor * (1 + RESUME_MARGIN):g} MB" if low
               else f"data disk has {free_mb:g} MB free on {path} again; claiming resumes")
    core.emit(DiskFloorCrossed(at=core.clock(), low=low, path=path, free_mb=free_mb,
                               floor_mb=floor, message=message))
