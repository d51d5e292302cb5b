"""Attach benchmark: what ``aitbc-miner attach`` costs with 100 and with 10,000 receipts held.

For each receipt count, a real agent (``python -m aitbc_miner --headless`` against
``python -m aitbc_miner.devnet``) starts on a journal seeded with that many receipts. The
viewer, ``python -m aitbc_miner attach``, runs in a pty (120x34 unless ``--size``) and
reaches the agent's control socket through a proxy in this process, which counts the
bytes each way and the receipt pages asked for. Per phase it reports the viewer's CPU
(user + system time from /proc over the window, % of one core) and bytes per second:

* idle: no jobs; the agent publishes what changes on its own (heartbeats, poll cadence);
* busy: no-op jobs submitted at ``--rate`` per second, so receipts keep arriving.

    PYTHONPATH=. .venv/bin/python bench/attach_bench.py               # about 2 minutes
    PYTHONPATH=. .venv/bin/python bench/attach_bench.py --seconds 10 --receipts 100,10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from console_bench import cpu_seconds, in_pty  # noqa: E402

from tests.fakes.receipts import seed_receipts  # noqa: E402

MINER_KEY = "devnet-miner-key"  # the devnet's default miner key
NOOP = {"type": "noop"}


class CountingProxy:
    """A Unix socket that forwards to the agent's control socket and counts what passes."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.down = 0  # agent -> viewer
        self.up = 0  # viewer -> agent
        self.pages = 0  # GET /receipts? requests (receipt pages)
        self.snapshots = 0  # snapshot lines down the /snapshots stream
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self, path: Path) -> None:
        self._server = await asyncio.start_unix_server(self._client, path=str(path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            writer.close()  # the bench is over (asyncio's callback would log a cancel)
        finally:
            self._handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agent_reader, agent_writer = await asyncio.open_unix_connection(str(self.target))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                        self.pages += data.count(b"GET /receipts?")
                    else:
                        self.down += len(data)
                        self.snapshots += data.count(b'{"seq":')
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, agent_writer, True), pipe(agent_reader, writer, False),
                             return_exceptions=True)


def spawn(cmd: list[str], env: dict[str, str], log_path: Path,
          pipe_stdout: bool = False) -> subprocess.Popen[str]:
    with log_path.open("w") as log_file:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if pipe_stdout else log_file,
                                stderr=log_file, text=True, start_new_session=True)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def viewer_in_pty(socket: Path, env: dict[str, str],
                  size: tuple[int, int]) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    return in_pty([sys.executable, "-m", "aitbc_miner", "attach", "--socket", str(socket)],
                  env, size)


async def run_one(root: Path, receipts: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_MINER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["XDG_CONFIG_HOME"] = str(root / "xdg")
    state = root / "agent" / "state"
    state.mkdir(parents=True)
    await seed_receipts(state / "journal.sqlite3", receipts, prefix="bench")
    devnet = spawn([sys.executable, "-m", "aitbc_miner.devnet", "--port", "0",
                    "--no-rate-limits"], env, root / "devnet.log", pipe_stdout=True)
    agent = viewer = None
    proxy = CountingProxy(state / "control.sock")
    close: Callable[[], None] | None = None
    try:
        assert devnet.stdout is not None
        ready = json.loads(await asyncio.to_thread(devnet.stdout.readline))
        agent = spawn([sys.executable, "-m", "aitbc_miner", "--headless"], dict(
            env, AITBC_MINER_COORDINATOR__URL=ready["url"], AITBC_MINER_MINER__KEY=MINER_KEY,
            AITBC_MINER_MINER__ID="bench-agent", AITBC_MINER_SLOTS__CPU="2",
            AITBC_MINER_COORDINATOR__PUBLIC_KEY=ready["public_key_id"],
            AITBC_MINER_INFERENCE__BACKEND="off", AITBC_MINER_PATHS__STATE_DIR=str(state),
            AITBC_MINER_PATHS__DATA_DIR=str(root / "agent" / "data")), root / "agent.log")
        async with httpx.AsyncClient(base_url=ready["url"], timeout=10) as http:
            async with asyncio.timeout(30):
                while not (await http.get("/_devnet/state")).json()["miners"] or not (
                        state / "control.sock").is_socket():
                    if agent.poll() is not None:
                        raise RuntimeError(f"agent exited {agent.returncode}; see agent.log")
                    await asyncio.sleep(0.1)
            receipt_bytes = await mean_receipt_bytes(state / "control.sock")
            await proxy.start(root / "proxy.sock")
            viewer_env = dict(env, TERM="xterm-256color", COLORTERM="truecolor",
                              AITBC_MINER_PATHS__STATE_DIR=str(root / "viewer"))
            viewer_env.pop("NO_COLOR", None)
            viewer, close = viewer_in_pty(root / "proxy.sock", viewer_env, args.size)
            await asyncio.sleep(args.warmup)  # start-up, the first page, the first full frame
            if viewer.poll() is not None:
                raise RuntimeError(f"the viewer exited {viewer.returncode}")
            result: dict[str, Any] = {"receipts": receipts}
            for phase in ("idle", "busy"):
                feeder = (asyncio.create_task(feed(http, ready["client_headers"], args.rate))
                          if phase == "busy" else None)
                if feeder is not None:
                    await asyncio.sleep(2.0)  # into the steady state
                before = (cpu_seconds(viewer.pid), proxy.down, proxy.up, proxy.pages,
                          proxy.snapshots)
                t0 = time.monotonic()
                await asyncio.sleep(args.seconds)
                wall = time.monotonic() - t0
                after = (cpu_seconds(viewer.pid), proxy.down, proxy.up, proxy.pages,
                         proxy.snapshots)
                if feeder is not None:
                    feeder.cancel()
                down, snaps = (after[1] - before[1]) / wall, (after[4] - before[4]) / wall
                result[phase] = {"cpu_pct": round(100 * (after[0] - before[0]) / wall, 2),
                                 "down_bps": round(down), "up_bps": round((after[2] - before[2])
                                                                          / wall),
                                 "pages": after[3] - before[3],
                                 "snapshots_per_s": round(snaps, 2),
                                 # the same stream with every held receipt in each snapshot,
                                 # as before receipts were paged (an estimate)
                                 "with_receipts_bps": round(down + snaps * receipts
                                                            * receipt_bytes)}
            return result
    finally:
        for proc in (viewer, agent, devnet):
            if proc is not None:
                stop(proc)  # type: ignore[arg-type]
        if close is not None:
            close()
        await proxy.stop()


async def mean_receipt_bytes(socket: Path) -> float:
    """The JSON size of one receipt as the agent sends it (over its newest page)."""
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://miner") as http:
        items = (await http.get("/receipts", params={"limit": 200})).json()["items"]
    return sum(len(json.dumps(r, separators=(",", ":"))) + 1 for r in items) / len(items)


async def feed(http: httpx.AsyncClient, headers: dict[str, str], rate: float) -> None:
    body = {"payload": NOOP, "constraints": {}, "ttl_seconds": 900}
    while True:
        (await http.post("/v1/jobs", json=body, headers=headers)).raise_for_status()
        await asyncio.sleep(1 / rate)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"attach viewer in a {args.size[0]}x{args.size[1]} pty, {args.seconds:g} s per "
             f"phase; busy = {args.rate:g} no-op jobs/s",
             f"{'receipts held':>13}  {'phase':<5} {'viewer CPU':>10} {'agent->viewer':>14} "
             f"{'viewer->agent':>14} {'pages':>5} {'snapshots/s':>11} "
             f"{'with receipts inside':>20}"]
    for r in results:
        for phase in ("idle", "busy"):
            p = r[phase]
            lines.append(f"{r['receipts']:>13,}  {phase:<5} {p['cpu_pct']:>8.1f} % "
                         f"{p['down_bps']:>10,} B/s {p['up_bps']:>10,} B/s {p['pages']:>5} "
                         f"{p['snapshots_per_s']:>11.2f} {p['with_receipts_bps']:>16,} B/s")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for n in args.receipts:
        with tempfile.TemporaryDirectory(prefix="attach-bench-") as tmp:
            print(f"... {n:,} receipts", file=sys.stderr, flush=True)
            results.append(await run_one(Path(tmp), n, args))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", default="100,10000",
                        type=lambda v: [int(x) for x in v.split(",")],
                        help="receipt counts held by the agent (comma list)")
    parser.add_argument("--seconds", type=float, default=20.0, help="window per phase")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument("--rate", type=float, default=2.0, help="busy: jobs per second")
    parser.add_argument("--size", default="120x34",
                        type=lambda v: tuple(int(x) for x in v.lower().split("x")))
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(report(results, args))
    print(json.dumps({"results": results, "args": {**vars(args), "size": list(args.size)}}))


if __name__ == "__main__":
    main()
