"""What the fleet view and the command channel cost, against a real redis-server.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/fleet_view_bench.py
    PYTHONPATH=. .venv/bin/python bench/fleet_view_bench.py --rigs 3,100,1000 --reads 50

It starts ``redis-server`` on a free loopback port (a temporary directory, removed after)
and measures, with the fleet's own client (``fleet.connect``):

- **read**: one ``read_fleet`` (the member set, then every rig's heartbeat hash in one
  pipeline), for fleets of each ``--rigs`` size: what one console refresh and
  ``aitbc-miner fleet --format json`` cost;
- **history**: one ``read_history`` of 360 samples (the console's history panel);
- **command**: from ``send_command`` to the rig's ``follow_commands`` calling ``act``
  (a rig following with the default 2 s blocking read): how long a pause pressed in the
  console takes to reach the rig.

The last line is one JSON object with every figure. This prints figures; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.fleet.commands import follow_commands, send_command
from aitbc_miner.fleet.connect import connect
from aitbc_miner.fleet.view import read_fleet, read_history
from tests.fleet.conftest import RedisServer
from tests.fleet.sample_rigs import gpu, heartbeat, history, write_rig

FLEET = "bench"


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(p95 * 1000, 3), "n": len(ordered)}


async def fill(redis_url: str, rigs: int, now: float) -> None:
    redis = connect(FleetSettings(redis_url=redis_url, name=FLEET))
    try:
        fields = heartbeat("running", now, slots=4, running=3, completed=1234, failed=7,
                           earned="98.7654", per_hour="12.5000",
                           gpus=[gpu(i, "NVIDIA RTX 4090", 90, 20000, 24564, 70, 400)
                                 for i in range(4)],
                           problems=[])
        samples = history(now - 3600, 360, util=[60, 90], power=[300, 400], per_sample=2,
                          earn_each=0.05)
        await redis.delete(f"aitbc:fleet:{FLEET}:rigs", f"aitbc:fleet:{FLEET}:metrics:rig-0000")
        for i in range(rigs):
            await write_rig(redis, FLEET, f"rig-{i:04d}", now + 30, fields,
                            samples if i == 0 else [])
    finally:
        await redis.aclose()


async def measure(url: str, sizes: list[int], reads: int, commands: int) -> dict[str, object]:
    now = time.time()
    out: dict[str, object] = {}
    redis = connect(FleetSettings(redis_url=url, name=FLEET))
    try:
        for size in sizes:
            await fill(url, size, now)
            times = []
            for _ in range(reads):
                start = time.perf_counter()
                view = await read_fleet(redis, FLEET)
                times.append(time.perf_counter() - start)
            assert len(view.rigs) == size
            out[f"read_{size}_rigs"] = quantiles(times)
            print(f"read {size:>5} rigs: {out[f'read_{size}_rigs']}", file=sys.stderr)
        times = []
        for _ in range(reads):
            start = time.perf_counter()
            samples = await read_history(redis, FLEET, "rig-0000")
            times.append(time.perf_counter() - start)
        assert len(samples) == 360
        out["history_360"] = quantiles(times)
        out["command"] = quantiles(await command_latency(url, redis, commands))
    finally:
        await redis.aclose()
    return out


async def command_latency(url: str, redis: Redis, count: int) -> list[float]:
    rig_client = connect(FleetSettings(redis_url=url, name=FLEET))
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def act(command: str, user: str) -> None:
        arrived.put_nowait(time.perf_counter())

    follower = asyncio.create_task(follow_commands(
        rig_client, FLEET, "rig-0000", act, logging.getLogger("bench")))
    try:
        await send_command(redis, FLEET, "rig-0000", "resume")  # the stream exists
        await asyncio.wait_for(arrived.get(), 30)  # found by the first SCAN
        times = []
        for i in range(count):
            start = time.perf_counter()
            await send_command(redis, FLEET, "rig-0000", "pause" if i % 2 else "resume")
            times.append(await asyncio.wait_for(arrived.get(), 30) - start)
        return times
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await rig_client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rigs", default="3,100,1000", help="fleet sizes (comma list)")
    parser.add_argument("--reads", type=int, default=50, help="reads per figure")
    parser.add_argument("--commands", type=int, default=50, help="commands timed")
    args = parser.parse_args()
    sizes = [int(n) for n in args.rigs.split(",")]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            figures = asyncio.run(measure(server.url, sizes, args.reads, args.commands))
        finally:
            server.stop()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    print(f"{'figure':<18} {'p50 ms':>9} {'p95 ms':>9}")
    for name, value in figures.items():
        assert isinstance(value, dict)
        print(f"{name:<18} {value['p50_ms']:>9.2f} {value['p95_ms']:>9.2f}")
    print(json.dumps({"figures": figures, "args": vars(args)}))


if __name__ == "__main__":
    main()
