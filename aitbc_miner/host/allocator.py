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
An operator's own ``MALLOC_ARENA_MAX`` is left as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 1


def use_one_arena() -> bool:
    """Ask glibc for one malloc arena for all threads; call before any thread starts.
    Returns whether the limit is now in force (False on another C library, or when the
    operator set ``MALLOC_ARENA_MAX``)."""
    if "MALLOC_ARENA_MAX" in os.environ or not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS))


def is_glibc() -> bool:
    with contextlib.suppress(ValueError, OSError):
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    return False
