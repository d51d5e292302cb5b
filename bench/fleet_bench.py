"""Fleet benchmarks: what a job costs with the fleet on against off, and how soon a job
handed off after a lost GPU restarts on another rig.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/fleet_bench.py            # ~1 min on 2 cores
    PYTHONPATH=. .venv/bin/python bench/fleet_bench.py --quick    # smoke run

Real parts: an ``Engine`` (and its ``FleetRig``) against the reference coordinator
(``aitbc_miner.devnet``, rate limits off) on loopback, and Debian's redis-server started
in a temporary directory (AOF with fsync always, as the tests run it). Engine state goes
to a temporary directory removed at the end.

1. Cost per job: ``--jobs`` noop jobs queued at once on one rig with ``--slots`` CPU
   slots, timed from the first claim to the last delivery, fleet off then on (each
   ``--rounds`` times, the best round kept). Also the CPU time of this process per job
   (the devnet runs in it too, the same in both) and Redis commands per job.
2. Hand-off restart: rig A runs a GPU job (a region constraint keeps rig B from claiming
   it at the coordinator), A's GPU is lost, and the time from the loss to the job's start
   on rig B is measured, ``--handoffs`` times; p50 and p95.

It prints a table and, as its last line, one JSON object. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis.asyncio as aioredis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine import Engine, SlotPool, Tuning
from aitbc_miner.engine.slots import Slot
from aitbc_miner.fleet.rig import FleetRig
from aitbc_miner.runners import RunnerRegistry, RunOutput
from aitbc_miner.runners.base import RunContext, SlotKind
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.fleet.conftest import RedisServer

KEYS = ("bench-key-a", "bench-key-b")


class GpuJob:
    """``gpu-job``: notes when it started (perf_counter); holds until ``release``."""

    name = "gpu-job"
    job_types = frozenset({"gpu-job"})
    slot_kind = SlotKind.GPU

    def __init__(self, hold: bool) -> None:
        self.hold = hold
        self.release = asyncio.Event()
        self.started: dict[str, float] = {}
        self.changed = asyncio.Event()

    def available(self) -> bool:
        return True

    def capabilities(self) -> Mapping[str, Any]:
        return {}

    async def run(self, payload: Mapping[str, Any], ctx: RunContext) -> RunOutput:
        self.started[ctx.job_id] = time.perf_counter()
        self.changed.set()
        if self.hold:
            await self.release.wait()
        return RunOutput({"status": "completed"})

    async def wait_started(self, job_id: str) -> float:
        while job_id not in self.started:
            self.changed.clear()
            await self.changed.wait()
        return self.started[job_id]


def make_engine(root: Path, devnet: Devnet, name: str, key: str, *, cpu: int, gpu: bool,
                region: str | None, runner: GpuJob | None) -> Engine:
    slots = [Slot(f"cpu:{i}", SlotKind.CPU) for i in range(cpu)]
    if gpu:
        slots.append(Slot("gpu:0", SlotKind.GPU, gpu_uuid=f"GPU-{name}"))
    runners: list[Any] = [BuiltinRunner()] + ([runner] if runner else [])
    return Engine(
        Tuning(miner_id=name, coordinator_url=devnet.url, pinned_key=devnet.public_key_id,
               region=region, poll_min_s=0.02, poll_max_s=0.2, flush_timeout_s=2.0),
        miner_key=key, journal_path=root / name / "journal.sqlite3",
        workspace_root=root / name / "jobs", pool=SlotPool(slots),
        registry=RunnerRegistry(runners), seed=1)


async def start(engine: Engine, redis_url: str | None, rig: str,
                lease_s: float = 3.0) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(engine.run())]
    if redis_url is not None:
        fleet = FleetRig(engine, FleetSettings(redis_url=redis_url, name="bench", rig_id=rig,
                                               lease_s=lease_s))
        tasks.append(asyncio.create_task(fleet.run()))
        await engine.wait_until(lambda s: s.fleet.state == "joined", timeout=30)
    return tasks


async def stop(engine: Engine, tasks: list[asyncio.Task[None]]) -> None:
    engine.stop(cancel_running=True)
    await asyncio.wait_for(tasks[0], 60)
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)


async def commands(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        stats = await client.info("stats")
        return int(stats["total_commands_processed"])
    finally:
        await client.aclose()


async def cost_round(root: Path, jobs: int, slots: int, redis_url: str | None,
                     dialect: Dialect) -> dict[str, float]:
    async with Devnet(dialect, rate_limits=False, miner_keys=KEYS) as devnet:
        for i in range(jobs):
            await devnet.submit_job({"type": "noop", "n": i})
        engine = make_engine(root, devnet, "rig-a", KEYS[0], cpu=slots, gpu=False,
                             region=None, runner=None)
        before = await commands(redis_url) if redis_url else 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        tasks = await start(engine, redis_url, "rig-a")
        await engine.wait_until(lambda s: s.counters.delivered >= jobs, timeout=600)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await stop(engine, tasks)
        after = await commands(redis_url) if redis_url else 0
    return {"ms_per_job": 1000 * wall / jobs, "cpu_ms_per_job": 1000 * cpu / jobs,
            "redis_commands_per_job": (after - before) / jobs}


async def handoffs(root: Path, count: int, redis_url: str, dialect: Dialect) -> list[float]:
    waits: list[float] = []
    async with Devnet(dialect, rate_limits=False, miner_keys=KEYS) as devnet:
        b_runner = GpuJob(hold=False)
        b = make_engine(root, devnet, "rig-b", KEYS[1], cpu=1, gpu=True, region="west",
                        runner=b_runner)
        b_tasks = await start(b, redis_url, "rig-b")
        try:
            for i in range(count):
                a_runner = GpuJob(hold=True)
                a = make_engine(root / f"a{i}", devnet, "rig-a", KEYS[0], cpu=1, gpu=True,
                                region="east", runner=a_runner)
                a_tasks = await start(a, redis_url, "rig-a")
                job = (await devnet.submit_job({"type": "gpu-job"},
                                               {"region": "east"}))["job_id"]
                await a_runner.wait_started(job)
                lost = time.perf_counter()
                a._on_gpu_lost(SimpleNamespace(uuid="GPU-rig-a", index=0,  # type: ignore[arg-type]
                                               name="SIMULATED"))
                waits.append(await asyncio.wait_for(b_runner.wait_started(job), 60) - lost)
                await b.wait_until(lambda s, n=i + 1: s.counters.delivered >= n, timeout=60)
                await stop(a, a_tasks)
                print(f"  hand-off {i + 1}/{count}: {1000 * waits[-1]:.1f} ms",
                      file=sys.stderr)
        finally:
            await stop(b, b_tasks)
    return waits


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    dialect = Dialect(args.dialect)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        root = Path(tmp)
        server = RedisServer(root / "redis")
        server.start()
        try:
            result: dict[str, Any] = {"dialect": dialect.value, "jobs": args.jobs,
                                      "slots": args.slots}
            rounds: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
            for r in range(args.rounds):  # off and on alternate, so load hits both alike
                for label, url in (("off", None), ("on", server.url)):
                    print(f"cost per job, fleet {label}, round {r + 1}", file=sys.stderr)
                    rounds[label].append(await cost_round(root / f"{label}{r}", args.jobs,
                                                          args.slots, url, dialect))
            for label, found in rounds.items():
                result[f"fleet_{label}"] = min(found, key=lambda x: x["ms_per_job"])
            waits = await handoffs(root / "handoff", args.handoffs, server.url, dialect)
            result["handoff_restart_ms"] = {
                "n": len(waits), "p50": 1000 * statistics.median(waits),
                "p95": 1000 * pct(waits, 0.95), "max": 1000 * max(waits)}
        finally:
            server.stop()
    return result


def report(result: dict[str, Any]) -> None:
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, dialect {result['dialect']}")
    off, on = result["fleet_off"], result["fleet_on"]
    print(f"{'':24}{'fleet off':>12}{'fleet on':>12}")
    print(f"{'wall ms per job':24}{off['ms_per_job']:12.2f}{on['ms_per_job']:12.2f}")
    print(f"{'CPU ms per job':24}{off['cpu_ms_per_job']:12.2f}{on['cpu_ms_per_job']:12.2f}")
    print(f"{'Redis commands per job':24}{'-':>12}{on['redis_commands_per_job']:12.1f}")
    h = result["handoff_restart_ms"]
    print(f"lost GPU -> job restarted on another rig: p50 {h['p50']:.1f} ms, "
          f"p95 {h['p95']:.1f} ms (n={h['n']}, max {h['max']:.1f} ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handoffs", type=int, default=30)
    parser.add_argument("--dialect", default="2026-08", choices=[d.value for d in Dialect])
    parser.add_argument("--quick", action="store_true", help="100 jobs, 1 round, 5 hand-offs")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.jobs, parsed.rounds, parsed.handoffs = 100, 1, 5
    report(asyncio.run(main(parsed)))
