"""Memory soak: the demo console's resident memory over time, and what grows.

Runs ``aitbc-miner demo`` (reference coordinator, fake Ollama, feeder, miner with two
simulated GPUs and the console, all in one process) in a real 120x34 pty, samples its RSS
every ``--every`` seconds, and prints the samples, the growth and the slope of a
least-squares line over the samples after the warm-up, in MiB per hour.

    .venv/bin/python bench/console_soak.py --minutes 20          # the README's figure
    .venv/bin/python bench/console_soak.py --minutes 10 --trace  # what grows, by line
    .venv/bin/python bench/console_soak.py --minutes 20 --split  # where the memory is

``--trace`` runs the same demo under tracemalloc instead and prints, at the end, the
source lines whose live allocations grew most between the end of the warm-up and the end
of the run (tracemalloc slows the process; its RSS figures are not the soak's).

``--split`` runs the same demo and, inside it, says where its memory is at each sample:
malloc's memory in use and free-but-held (glibc's ``mallinfo2``), Python's object
allocator (blocks in use, and free blocks in its arenas), SQLite's, and the objects the
garbage collector tracks. Live data growing shows in *python*; fragmentation in *malloc
free*.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.console_bench import in_pty, stop  # noqa: E402

WARMUP_S = 120.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return 3600 * cov / var if var else 0.0


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def where_memory_is(started: float) -> dict[str, float]:
    """Inside the process (glibc): its memory by owner, in MiB."""
    from aitbc_miner.host import allocator

    info = allocator.heap()
    assert info is not None, "--split reads glibc's malloc"
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    with tempfile.TemporaryFile("w+") as stats:  # Python's allocator reports on C stderr
        saved = os.dup(2)
        os.dup2(stats.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        stats.seek(0)
        text = stats.read()

    def stat(name: str) -> float:
        found = re.search(re.escape(name) + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) / 2**20 if found else float("nan")

    mib = 2**20
    return {"min": (time.monotonic() - started) / 60, "rss": rss_mib(os.getpid()),
            "malloc used": (info.uordblks + info.hblkhd) / mib,
            "malloc free": info.fordblks / mib,
            "python": stat("# bytes in allocated blocks"),
            "python free": stat("# bytes in available blocks"),
            "sqlite": sqlite.sqlite3_memory_used() / mib,
            "gc objects": len(gc.get_objects()) / 1000}


async def in_process_demo(watch: Callable[[], Awaitable[None]]) -> None:
    """The demo with its console, as ``aitbc-miner demo`` runs it, until ``watch`` ends."""
    from aitbc_miner.host import allocator
    from aitbc_miner.host.cli import Console, _log_to_file
    from aitbc_miner.host.demo import run_demo

    allocator.tune()
    demo = asyncio.create_task(run_demo(ui=Console(None), log_to=_log_to_file))
    try:
        await watch()
    finally:
        demo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await demo


async def traced_child(minutes: float, every: float, out: Path) -> None:
    """In the pty: snapshots of allocations after the warm-up and at the end; the top
    growth, by line, written to ``out``."""
    tracemalloc.start(12)

    async def watch() -> None:
        await asyncio.sleep(WARMUP_S)
        first = tracemalloc.take_snapshot()
        await asyncio.sleep(max(0.0, minutes * 60 - WARMUP_S))
        last = tracemalloc.take_snapshot()
        lines = []
        for stat in last.compare_to(first, "lineno")[:25]:
            lines.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks"
                         f"  {stat.traceback[0]}")
        for stat in last.compare_to(first, "traceback")[:10]:
            lines.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
            lines.extend(f"      {frame}" for frame in stat.traceback.format()[-8:])
        out.write_text("\n".join(lines) + "\n")

    await in_process_demo(watch)


async def split_child(minutes: float, every: float, out: Path) -> None:
    """In the pty: ``where_memory_is`` every ``every`` seconds, one JSON line each."""
    started = time.monotonic()

    async def watch() -> None:
        with out.open("w") as lines:
            while time.monotonic() - started <= minutes * 60:
                print(json.dumps(where_memory_is(started)), file=lines, flush=True)
                await asyncio.sleep(every)

    await in_process_demo(watch)


def print_split(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not rows:
        print("(the child wrote no samples)")
        return
    print("  ".join(f"{name:>11}" for name in rows[0]) + "   (MiB; gc objects in thousands)")
    for row in rows:
        print("  ".join(f"{value:11.1f}" for value in row.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--size", default="120x34")
    parser.add_argument("--trace", action="store_true", help="find what grows (tracemalloc)")
    parser.add_argument("--split", action="store_true", help="where the memory is (glibc)")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(CHILDREN[args.child](args.minutes, args.every, args.out))
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    env.pop("NO_COLOR", None)
    child = "trace" if args.trace else "split" if args.split else None
    out = Path(tempfile.gettempdir()) / f"console-soak-{child}-{os.getpid()}.txt"
    exe = Path(sys.executable).with_name("aitbc-miner")
    argv = ([sys.executable, __file__, "--child", child, "--out", str(out),
             "--minutes", str(args.minutes), "--every", str(args.every)]
            if child else [str(exe), "demo"])
    print(f"machine: {machine()}")
    print(f"{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))} in a "
          f"{width}x{height} pty for {args.minutes:g} min", flush=True)
    proc, close = in_pty(argv, env, (width, height))
    started = time.monotonic()
    points: list[tuple[float, float]] = []
    try:
        while (elapsed := time.monotonic() - started) <= args.minutes * 60:
            if proc.poll() is not None:
                break
            mib = rss_mib(proc.pid)
            points.append((elapsed, mib))
            print(f"  {elapsed / 60:6.1f} min  RSS {mib:7.1f} MiB", flush=True)
            if elapsed >= args.minutes * 60:
                break
            time.sleep(min(args.every, args.minutes * 60 - elapsed))
        if child:
            proc.wait(timeout=60)
    finally:
        stop(proc, 15)  # the demo drains before it exits
        close()
    if child == "trace":
        print(out.read_text() if out.exists() else "(the child wrote no trace)")
        return
    if child == "split":
        print_split(out)
    steady = [(t, m) for t, m in points if t >= WARMUP_S]
    for what, window in ((f"after the {WARMUP_S / 60:g}-min warm-up", steady),
                         ("the second half", [(t, m) for t, m in points
                                              if t >= points[-1][0] / 2])):
        if len(window) >= 2:
            first, last = window[0][1], window[-1][1]
            print(f"{what}: {first:.1f} -> {last:.1f} MiB ({100 * (last - first) / first:+.1f} %),"
                  f" slope {slope_per_hour(window):+.1f} MiB/h")


CHILDREN: dict[str, Callable[[float, float, Path], Awaitable[None]]] = {
    "trace": traced_child, "split": split_child}

if __name__ == "__main__":
    main()
