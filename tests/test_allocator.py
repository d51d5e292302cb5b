"""The C allocator, set for a long run (``aitbc_miner.host.allocator``): one malloc arena
for the whole process, so the helper threads' freed buffers stay usable by everyone, and
a fixed mmap threshold, so large buffers are given back whole when freed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from aitbc_miner.host import allocator, cli

# Four threads each allocate in their own context; glibc's malloc_stats() then lists one
# "Arena N:" block per arena on stderr.
PROBE = """
import ctypes, sys, threading
from aitbc_miner.host import allocator
if sys.argv[1] == "one":
    assert allocator.use_one_arena()
kept = []
def work():
    kept.append(bytearray(1 << 16))  # below the mmap threshold: from the thread's arena
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()
"""

pytestmark = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc's malloc only")


def arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env=env)
    return sum(line.startswith("Arena ") for line in run.stderr.splitlines())


def test_threads_share_one_arena() -> None:
    assert arenas("default") > 1  # the probe can tell
    assert arenas("one") == 1


# A 300 KB buffer is mapped and freed; glibc then raises its threshold past it unless the
# threshold is fixed. Whether the next 200 KB buffer is mapped shows in mallinfo2's hblks.
MAPPED = """
import ctypes, sys
from aitbc_miner.host import allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert allocator.keep_mmap_threshold()
freed = bytearray(300_000)
del freed
before = libc.mallinfo2().hblks
kept = bytearray(200_000)
print(libc.mallinfo2().hblks - before)
"""


def mapped(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    run = subprocess.run([sys.executable, "-c", MAPPED, mode], capture_output=True, text=True,
                         check=True, env=env)
    return int(run.stdout)


def test_large_buffers_stay_mapped_after_a_larger_one_is_freed() -> None:
    assert mapped("default") == 0  # the probe can tell: glibc moved its threshold
    assert mapped("fixed") == 1


@pytest.mark.parametrize(("variable", "setting"), [
    ("MALLOC_ARENA_MAX", allocator.use_one_arena),
    ("MALLOC_MMAP_THRESHOLD_", allocator.keep_mmap_threshold)])
def test_an_operators_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch, variable: str,
                                            setting: Callable[[], bool]) -> None:
    monkeypatch.setenv(variable, "4")
    assert setting() is False


def test_the_command_asks_for_both_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(allocator, "use_one_arena", lambda: calls.append("arena") or True)
    monkeypatch.setattr(allocator, "keep_mmap_threshold", lambda: calls.append("mmap") or True)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == ["arena", "mmap"]
