"""Console benchmark: 10,000 receipts and 64 running jobs updating several times a second.

Reports
1. the time to apply one engine snapshot to the console (``Dashboard.apply``): the first
   one (10,000 receipts loaded), a busy update (64 jobs' progress changed, 2 new
   receipts), an unchanged one (the age tick); and the time from the engine's listener
   call until the snapshot is applied on the UI loop (rendering is in the CPU share);
2. the console's CPU share (% of one core) in a real terminal (a pty of 120x34 or the
   size given) while idle (no snapshots, only the 1 s age tick) and while busy (a
   snapshot every 0.2 s, the engine's own maximum rate, each changing all 64 jobs and
   adding 2 receipts).

    .venv/bin/python bench/console_bench.py            # all of it (about 30 s)
    .venv/bin/python bench/console_bench.py --seconds 5 --size 200x50
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aitbc_miner.engine.receipt_window import ReceiptWindow  # noqa: E402
from aitbc_miner.engine.snapshot import Snapshot  # noqa: E402
from tui.app import MinerConsole  # noqa: E402
from tui.fake import T0, FakeEngine, receipts, sample_snapshot  # noqa: E402

JOBS, RECEIPTS = 64, 10_000


def windowed(snap: Snapshot) -> Snapshot:
    """``snap`` with its receipts in a window, as the engine's snapshots carry them."""
    window = ReceiptWindow.of(reversed(snap.receipts), RECEIPTS)
    return dataclasses.replace(snap, receipts=window)


def base_snapshot() -> Snapshot:
    return windowed(sample_snapshot("busy", n_jobs=JOBS, n_receipts=RECEIPTS))


def next_snapshot(prev: Snapshot, step: int) -> Snapshot:
    """The one after ``prev``: every job's progress moves; two new receipts arrive (the
    oldest two fall off)."""
    jobs = tuple(dataclasses.replace(j, progress=(("pct", (step + i) % 100),
                                                  ("tokens_per_s", 30.0 + (step * 7 + i) % 20)))
                 for i, j in enumerate(prev.jobs))
    fresh = receipts(2, start=RECEIPTS + 2 * (step - 1), now=T0 + step)
    held = prev.receipts
    window = held if isinstance(held, ReceiptWindow) else ReceiptWindow.of(reversed(held), RECEIPTS)
    return dataclasses.replace(prev, seq=prev.seq + 1, at=T0 + step, jobs=jobs,
                               receipts=window.extend(reversed(fresh)))


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   max {ms[-1]:7.2f} ms"


async def measure_apply(size: tuple[int, int], rounds: int) -> None:
    base = base_snapshot()
    empty = dataclasses.replace(base, seq=0, jobs=(), receipts=())
    engine = FakeEngine(empty)  # the console mounts empty; the first apply loads it all
    app = MinerConsole(engine, theme="aitbc-dark", prefs_path=None, tick=None)
    async with app.run_test(size=size) as pilot:
        dash = app.dashboard
        started = time.perf_counter()
        dash.apply(base)
        first = time.perf_counter() - started
        await pilot.pause()
        snaps = [base]
        for step in range(1, 2 * rounds + 1):
            snaps.append(next_snapshot(snaps[-1], step))
        busy, same, shown = [], [], []
        for snap in snaps[1:rounds + 1]:
            t0 = time.perf_counter()
            dash.apply(snap)
            busy.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dash.apply(snap)
            same.append(time.perf_counter() - t0)
            await pilot.pause()
        for snap in snaps[rounds + 1:]:
            t0 = time.perf_counter()
            engine.publish(snap)  # the listener posts it to the dashboard's queue
            while dash.latest is None or dash.latest.seq != snap.seq:
                await asyncio.sleep(0)
            shown.append(time.perf_counter() - t0)
            await pilot.pause()
        assert len(dash.receipts) == RECEIPTS and dash.jobs.row_count == JOBS
        print(f"apply one snapshot ({JOBS} jobs, {RECEIPTS:,} receipts, {size[0]}x{size[1]}):")
        print(f"  first (loads {RECEIPTS:,} receipts): {first * 1000:8.2f} ms")
        print(f"  busy update (64 jobs change, +2 receipts): {percentiles(busy)}")
        print(f"  unchanged (the 1 s age tick):             {percentiles(same)}")
        print(f"  listener call -> applied on the UI loop:  {percentiles(shown)}")
        print(f"  receipt rows added one by one: {dash.receipts.added_total - RECEIPTS:,};"
              f" whole-table rebuilds after the first load: {dash.receipts.rebuilds}")


# --- CPU share in a real terminal --------------------------------------------------------


async def child(mode: str, rate_hz: float) -> None:
    """Runs in the pty: the console over a fake engine, busy or idle."""
    base = base_snapshot()
    engine = FakeEngine(base)
    app = MinerConsole(engine, theme="aitbc-dark", prefs_path=None)

    async def drive() -> None:
        step = 0
        while True:
            await asyncio.sleep(1 / rate_hz)
            step += 1
            engine.publish(next_snapshot(engine.snapshot(), step))

    task = asyncio.get_running_loop().create_task(drive()) if mode == "busy" else None
    try:
        await app.run_async()
    finally:
        if task is not None:
            task.cancel()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_pty(argv: list[str], env: dict[str, str],
           size: tuple[int, int]) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """``argv`` in a pty of ``size`` whose output a thread reads and throws away (a terminal
    that keeps up); the second value closes the pty once the process has ended."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, close_fds=True)
    os.close(slave)
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break

    threading.Thread(target=drain, daemon=True).start()

    def close() -> None:
        done.set()
        os.close(master)

    return proc, close


def stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still there after ``grace_s``; reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def measure_cpu(mode: str, seconds: float, size: tuple[int, int], rate_hz: float) -> float:
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    env.pop("NO_COLOR", None)
    proc, close = in_pty([sys.executable, __file__, "--child", mode, "--rate", str(rate_hz)],
                         env, size)
    try:
        time.sleep(4.0)  # start-up and the first full frame are not counted
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        used, wall = cpu_seconds(proc.pid) - before, time.monotonic() - t0
    finally:
        stop(proc, 5)  # a fake engine holds nothing worth draining
        close()
    return 100.0 * used / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU sampling window")
    parser.add_argument("--size", default="120x34", help="terminal size, WxH")
    parser.add_argument("--rate", type=float, default=5.0, help="busy snapshots per second")
    parser.add_argument("--rounds", type=int, default=100, help="apply samples")
    parser.add_argument("--child", choices=["busy", "idle"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.rate))
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    asyncio.run(measure_apply((width, height), args.rounds))
    print(f"console CPU share in a {width}x{height} pty, % of one core over {args.seconds:.0f} s:")
    for mode in ("idle", "busy"):
        share = measure_cpu(mode, args.seconds, (width, height), args.rate)
        what = "no snapshots, 1 s age tick" if mode == "idle" else \
            f"{args.rate:g} snapshots/s, {JOBS} jobs changing, +2 receipts each"
        print(f"  {mode:<5} {share:5.1f} %   ({what})")


if __name__ == "__main__":
    main()
