"""Three rigs written straight into Redis by the keys of docs/fleet.md, as rigs' heartbeats
and metrics would leave them: for the fleet view, the console and ``aitbc-miner fleet``.

- ``rig-a``: running, two GPUs, busy, earning;
- ``rig-b``: paused, one GPU, a problem;
- ``rig-c``: its lease ran out two minutes ago (gone), last seen then.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

FLEET = "farm"
NOW = 1_800_000_000.0  # the tests' "now" (unix seconds; 2027-01-15 08:00 UTC)
RIGS = ("rig-a", "rig-b", "rig-c")


def key(fleet: str, name: str) -> str:
    return f"aitbc:fleet:{fleet}:{name}"


def gpu(index: int, name: str, util: float, used: int, total: int, temp: int,
        power: float) -> dict[str, Any]:
    return {"index": index, "name": name, "util_pct": util, "mem_used_mib": used,
            "mem_total_mib": total, "temp_c": temp, "power_w": power}


def heartbeat(state: str, seen: float, *, slots: int, running: int, completed: int,
              failed: int, earned: str, per_hour: str, gpus: list[dict[str, Any]],
              problems: list[str], outbox: int = 0) -> dict[str, str]:
    return {
        "state": state, "seen": f"{seen:.3f}", "lease_until": f"{seen + 30:.3f}",
        "coordinator": "http://127.0.0.1:8080", "dialect": "2026-08", "version": "0.1.0",
        "slots": str(slots), "running": str(running), "outbox": str(outbox),
        "completed": str(completed), "failed": str(failed), "earned": earned,
        "earned_per_hour": per_hour, "gpus": json.dumps(gpus), "problems": json.dumps(problems),
    }


def history(start: float, n: int, *, util: list[float], power: list[float],
            per_sample: int, earn_each: float, problems: int = 0) -> list[dict[str, str]]:
    """``n`` samples ten seconds apart from ``start``; utilisation and power cycle."""
    samples = []
    for i in range(n):
        samples.append({
            "ts": f"{start + 10 * i:.3f}", "completed": str(per_sample * i),
            "failed": str(i // 7), "earned": f"{earn_each * per_sample * i:.4f}",
            "gpu_util_pct": f"{util[i % len(util)]:.1f}",
            "power_w": f"{power[i % len(power)]:.1f}", "outbox": str(i % 3),
            "problems": str(problems)})
    return samples


async def write_rig(redis: Redis, fleet: str, rig: str, lease_until: float,
                    fields: dict[str, str], samples: list[dict[str, str]]) -> None:
    await redis.zadd(key(fleet, "rigs"), {rig: lease_until})
    await redis.hset(key(fleet, f"rig:{rig}"), mapping=fields)  # type: ignore[arg-type]
    for sample in samples:
        entry_id = f"{int(float(sample['ts']) * 1000)}-0"
        await redis.xadd(key(fleet, f"metrics:{rig}"), sample,  # type: ignore[arg-type]
                         id=entry_id, maxlen=1000)


async def write_three_rigs(redis: Redis, fleet: str = FLEET, now: float = NOW) -> None:
    await write_rig(
        redis, fleet, "rig-a", now + 25,
        heartbeat("running", now - 5, slots=4, running=3, completed=1234, failed=7,
                  earned="98.7654", per_hour="12.5000",
                  gpus=[gpu(0, "NVIDIA RTX 4090", 97, 20480, 24564, 71, 402.5),
                        gpu(1, "NVIDIA RTX 4090", 88, 18000, 24564, 68, 380.0)],
                  problems=[], outbox=2),
        history(now - 600, 60, util=[60, 75, 90, 97, 92, 80], power=[300, 350, 400, 410],
                per_sample=2, earn_each=0.05))
    await write_rig(
        redis, fleet, "rig-b", now + 28,
        heartbeat("paused", now - 2, slots=2, running=0, completed=310, failed=1,
                  earned="21.0000", per_hour="0",
                  gpus=[gpu(0, "NVIDIA A4000", 0, 512, 16376, 41, 35.0)],
                  problems=["GPU 0 at 41 C, fan 0 rpm"]),
        history(now - 600, 60, util=[50, 40, 20, 5, 0, 0], power=[200, 120, 40, 35],
                per_sample=1, earn_each=0.06, problems=1))
    await write_rig(
        redis, fleet, "rig-c", now - 120,
        heartbeat("running", now - 150, slots=1, running=1, completed=42, failed=0,
                  earned="3.1000", per_hour="2.0000",
                  gpus=[gpu(0, "NVIDIA T4", 100, 15000, 15360, 80, 70.0)],
                  problems=["outbox: 5 outcomes waiting"], outbox=5),
        history(now - 900, 30, util=[100, 99, 100], power=[70, 69],
                per_sample=1, earn_each=0.07))
