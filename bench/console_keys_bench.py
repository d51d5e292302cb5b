"""Key to screen: how long a key takes to show its effect in a real terminal.

The console runs in a pty (120x34 unless ``--size``) over a scripted engine with 8 running
jobs and 10,000 receipts that publishes a snapshot every 0.2 s (the engine's own maximum
rate), every job's progress changing and two receipts arriving each time. The bench types
``p`` (pause) and waits for the header's `` PAUSED`` to be written to the terminal, then
``p`` again (resume) and waits for `` RUNNING ``: each sample is the time from writing the
key to the pty until the bytes that show its effect are read back from it. Between
samples it waits a random 50-250 ms, so keys land at every point of the snapshot cycle.

    .venv/bin/python bench/console_keys_bench.py              # 200 keys (about 1 min)
    .venv/bin/python bench/console_keys_bench.py --keys 400 --size 200x50

Also prints, for comparison, the same measure for a bare Textual app (one Static whose
text a key toggles) in the same pty: the floor set by Textual and the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import random
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.console_bench import next_snapshot, percentiles, stop, windowed  # noqa: E402
from bench.console_soak import machine  # noqa: E402

JOBS, RECEIPTS, RATE_HZ = 8, 10_000, 5.0


async def console_child() -> None:
    from tui.app import MinerConsole
    from tui.fake import FakeEngine, sample_snapshot

    base = windowed(sample_snapshot("busy", n_jobs=JOBS, n_receipts=RECEIPTS))
    engine = FakeEngine(base)
    app = MinerConsole(engine, theme="aitbc-dark", prefs_path=None)

    async def drive() -> None:
        step = 0
        while True:
            await asyncio.sleep(1 / RATE_HZ)
            step += 1
            engine.publish(next_snapshot(engine.snapshot(), step))  # keeps the paused mode

    task = asyncio.get_running_loop().create_task(drive())
    try:
        await app.run_async()
    finally:
        task.cancel()


def bare_child() -> None:
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    class Bare(App[None]):
        BINDINGS = [("p", "toggle", "toggle")]
        paused = False

        def compose(self) -> ComposeResult:
            yield Static(" RUNNING ", id="mode")

        def action_toggle(self) -> None:
            self.paused = not self.paused
            self.query_one(Static).update(" PAUSED · no new jobs " if self.paused
                                          else " RUNNING ")

    Bare().run()


class Terminal:
    """A pty running ``argv``; a thread collects everything written to it."""

    def __init__(self, argv: list[str], size: tuple[int, int]) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        env.pop("NO_COLOR", None)
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.output = bytearray()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            with self.changed:
                if not data:
                    self.output += b"\0EOF"
                    self.changed.notify_all()
                    return
                self.output += data
                self.changed.notify_all()

    def wait_for(self, marker: bytes, since: int, timeout: float = 20.0) -> float:
        """Block until ``marker`` is written after offset ``since``; when it was read."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.output.find(marker, since) < 0:
                if self.output.endswith(b"\0EOF") or time.monotonic() > deadline:
                    raise RuntimeError(f"{marker!r} never came (the app ended or hung)")
                self.changed.wait(0.5)
            return time.perf_counter()

    def key(self, key: bytes, marker: bytes) -> float:
        with self.changed:
            since = len(self.output)
        sent = time.perf_counter()
        os.write(self.master, key)
        return self.wait_for(marker, since) - sent

    def close(self) -> None:
        stop(self.proc, 10)
        os.close(self.master)


def measure(argv: list[str], keys: int, size: tuple[int, int]) -> list[float]:
    term = Terminal(argv, size)
    try:
        term.wait_for(b" RUNNING ", 0, timeout=60)
        time.sleep(2.0)  # the first full frames are not counted
        rng = random.Random(7)
        samples = []
        for i in range(keys):
            marker = b" PAUSED" if i % 2 == 0 else b" RUNNING "
            samples.append(term.key(b"p", marker))
            time.sleep(rng.uniform(0.05, 0.25))
        return samples
    finally:
        term.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--size", default="120x34")
    parser.add_argument("--child", choices=["console", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "console":
        asyncio.run(console_child())
        return
    if args.child == "bare":
        bare_child()
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"machine: {machine()}")
    print(f"key to screen in a {width}x{height} pty, {args.keys} keys "
          f"(p: pause/resume, effect read back from the terminal):")
    for child, what in (("bare", "bare Textual app (one Static)"),
                        ("console", f"console, {JOBS} running jobs, {RECEIPTS:,} receipts, "
                                    f"{RATE_HZ:g} snapshots/s")):
        samples = measure([sys.executable, __file__, "--child", child], args.keys,
                          (width, height))
        print(f"  {what}:\n    {percentiles(samples)}")


if __name__ == "__main__":
    main()
