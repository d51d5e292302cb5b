"""One malloc arena for the whole process (``aitbc_miner.host.allocator``): the helper
threads' freed buffers stay usable by everyone, so resident memory stops growing."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_an_operators_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert allocator.use_one_arena() is False


def test_the_command_asks_for_it_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(allocator, "use_one_arena", lambda: calls.append("arena") or True)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == ["arena"]
