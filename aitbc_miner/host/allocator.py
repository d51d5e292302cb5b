"""The C allocator, set for one long-running process with a few helper threads.

glibc gives each thread its own malloc arena, up to eight per core. The miner's helper
threads (the journal's SQLite thread, ``asyncio.to_thread`` workers) allocate and free
buffers of many sizes in their own arenas. Free space in one arena never serves another
thread, and only an arena's top is given back to the system, so the free-but-resident
part grows as the process runs. Measured in the demo (``bench/console_soak.py``
and ``docs/console-speed.md``): free memory held by malloc grew from 4 to 20 MiB in the
first 30 minutes with one arena per thread; after 11 minutes it was 8.3 MiB with one arena
against 13.4 MiB.

Python threads take turns under the GIL, so one arena costs the miner no parallelism.

glibc also raises its mmap threshold each time a block it mapped is freed: after the
console frees one large buffer (a full screen of escape codes, a batch of rows), blocks
of that size come from the heap instead, and a heap gives memory back only from its top.
Each such buffer then leaves a hole wherever a longer-lived block was placed after it;
the demo held four free 256 KiB holes after 11 minutes, more as it ran. The threshold is
kept at glibc's starting 128 KiB, so large buffers are always mapped and unmapped whole.
That costs a system call for each, a few per frame at most.

An operator's own ``MALLOC_ARENA_MAX`` or ``MALLOC_MMAP_THRESHOLD_`` is left as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

M_ARENA_MAX = -8  # mallopt's parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
ARENAS = 1
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's own starting value, kept from moving


def tune() -> None:
    """Both settings below; call first thing, before any thread starts."""
    use_one_arena()
    keep_mmap_threshold()


def use_one_arena() -> bool:
    """Ask glibc for one malloc arena for all threads. Returns whether the limit is now in
    force (False on another C library, or when the operator set ``MALLOC_ARENA_MAX``)."""
    return _mallopt("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS)


def keep_mmap_threshold() -> bool:
    """Map every block of ``MMAP_THRESHOLD`` bytes or more, however large the blocks freed
    before it (False on another C library, or when the operator set the threshold)."""
    return _mallopt("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _mallopt(variable: str, parameter: int, value: int) -> bool:
    if variable in os.environ or not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(parameter, value))


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: ``uordblks`` in use, ``fordblks`` free but held,
    ``hblkhd`` in mapped blocks (bytes)."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap() -> MallInfo2 | None:
    """What malloc holds now (glibc 2.33 and later), else None."""
    if not is_glibc():
        return None
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    info: MallInfo2 = mallinfo2()
    return info


def is_glibc() -> bool:
    with contextlib.suppress(ValueError, OSError):
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    return False
