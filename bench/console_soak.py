"""Memory soak: the demo console's resident memory over time, and what grows.

Runs ``aitbc-miner demo`` (reference coordinator, fake Ollama, feeder, miner with two
simulated GPUs and the console, all in one process) in a real 120x34 pty, samples its RSS
every ``--every`` seconds, and prints the samples, the growth and the slope of a
least-squares line over the samples after the warm-up, in MiB per hour.

    .venv/bin/python bench/console_soak.py --minutes 20          # the README's figure
    .venv/bin/python bench/console_soak.py --minutes 10 --trace  # what grows, by line

``--trace`` runs the same demo under tracemalloc instead and prints, at the end, the
source lines whose live allocations grew most between the end of the warm-up and the end
of the run (tracemalloc slows the process; its RSS figures are not the soak's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import tracemalloc
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


async def traced_child(minutes: float, out: Path) -> None:
    """In the pty: the demo with its console, snapshotting allocations after the warm-up
    and at the end, then writing the top growth to ``out``."""
    from aitbc_miner.host.cli import Console, _log_to_file
    from aitbc_miner.host.demo import run_demo

    tracemalloc.start(12)

    async def watch(demo: asyncio.Task[object]) -> None:
        await asyncio.sleep(WARMUP_S)
        first = tracemalloc.take_snapshot()
        await asyncio.sleep(max(0.0, minutes * 60 - WARMUP_S))
        last = tracemalloc.take_snapshot()
        lines = []
        for stat in last.compare_to(first, "traceback")[:15]:
            lines.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
            lines.extend(f"      {frame}" for frame in stat.traceback.format()[-8:])
        out.write_text("\n".join(lines) + "\n")
        demo.cancel()

    demo = asyncio.create_task(run_demo(ui=Console(None), log_to=_log_to_file))
    watcher = asyncio.create_task(watch(demo))
    try:
        await demo
    except asyncio.CancelledError:
        pass
    watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--size", default="120x34")
    parser.add_argument("--trace", action="store_true", help="find what grows (tracemalloc)")
    parser.add_argument("--child-trace", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_trace:
        asyncio.run(traced_child(args.minutes, Path(args.child_trace)))
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    env.pop("NO_COLOR", None)
    out = Path(f"/tmp/console-soak-trace-{os.getpid()}.txt")
    exe = Path(sys.executable).with_name("aitbc-miner")
    argv = ([sys.executable, __file__, "--child-trace", str(out), "--minutes", str(args.minutes)]
            if args.trace else [str(exe), "demo"])
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
        if args.trace:
            proc.wait(timeout=60)
    finally:
        stop(proc, 15)  # the demo drains before it exits
        close()
    if args.trace:
        print(out.read_text() if out.exists() else "(the child wrote no trace)")
        return
    steady = [(t, m) for t, m in points if t >= WARMUP_S]
    for what, window in ((f"after the {WARMUP_S / 60:g}-min warm-up", steady),
                         ("the second half", [(t, m) for t, m in points
                                              if t >= points[-1][0] / 2])):
        if len(window) >= 2:
            first, last = window[0][1], window[-1][1]
            print(f"{what}: {first:.1f} -> {last:.1f} MiB ({100 * (last - first) / first:+.1f} %),"
                  f" slope {slope_per_hour(window):+.1f} MiB/h")


if __name__ == "__main__":
    main()
