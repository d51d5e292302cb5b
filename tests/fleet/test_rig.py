"""The rig side of the fleet, in-process: engines against the reference coordinator (both
dialects) and a real redis-server. Real processes: tests/fleet/test_fleet_processes.py."""

from __future__ import annotations

import asyncio
import inspect
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from aitbc_miner.codes import ErrorCode
from aitbc_miner.config.model import FleetSettings
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine import Engine, SlotPool, Tuning
from aitbc_miner.engine.slots import Slot
from aitbc_miner.engine.snapshot import FLEET_UNREACHABLE
from aitbc_miner.fleet.rig import FleetRig
from aitbc_miner.journal import JobState, Journal
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.base import JobFailed, SlotKind
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.gpu.test_engine_integration import HoldingGpuRunner

from .conftest import RedisServer

KEYS = ("fleet-key-a", "fleet-key-b", "fleet-key-c")
FLEET = "t"


class Rig:
    """An engine and its FleetRig, run as two tasks (as the host runs them)."""

    def __init__(self, root: Path, devnet: Devnet, name: str, key: str, url: str, *,
                 gpu: bool = False, cpu: int = 1, lease_s: float = 2.0,
                 runner: Any = None, settings: FleetSettings | None = None) -> None:
        self.name = name
        self.runner = runner or HoldingGpuRunner()
        slots = [Slot(f"cpu:{i}", SlotKind.CPU) for i in range(cpu)]
        if gpu:
            slots.append(Slot("gpu:0", SlotKind.GPU, gpu_uuid=f"GPU-{name}"))
        self.state = root / name
        self.engine = Engine(
            Tuning(miner_id=name, coordinator_url=devnet.url, pinned_key=devnet.public_key_id,
                   heartbeat_interval_s=5.0, poll_min_s=0.05, poll_max_s=0.3,
                   flush_timeout_s=1.0),
            miner_key=key, journal_path=self.state / "journal.sqlite3",
            workspace_root=self.state / "jobs", pool=SlotPool(slots),
            registry=RunnerRegistry([BuiltinRunner(), self.runner]), connect_timeout_s=1.0,
            read_timeout_s=2.0, seed=7)
        self.fleet = FleetRig(self.engine, settings or FleetSettings(
            redis_url=url, name=FLEET, rig_id=name, lease_s=lease_s))
        self.tasks = [asyncio.create_task(self.engine.run()),
                      asyncio.create_task(self.fleet.run())]

    def lose_gpu(self) -> None:
        self.engine._on_gpu_lost(SimpleNamespace(uuid=f"GPU-{self.name}", index=0,
                                                 name="SIMULATED GPU"))  # type: ignore[arg-type]

    async def stop(self) -> None:
        if not self.tasks[0].done():
            self.engine.stop(cancel_running=True)
        async with asyncio.timeout(30):
            await self.tasks[0]
        self.tasks[1].cancel()
        await asyncio.gather(self.tasks[1], return_exceptions=True)

    async def journal(self) -> Journal:
        return await Journal.open(self.state / "journal.sqlite3")


async def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    """Re-check coordinator/Redis state (which has no event here) until it holds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                answer = predicate()
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


def identity(devnet: Devnet, name: str, key: str) -> str:
    return key if devnet.dialect is Dialect.V2026_01 else name


async def test_a_job_whose_gpu_is_lost_finishes_on_another_rig(
        tmp_path: Path, dialect: Dialect, redis_server: RedisServer) -> None:
    async with Devnet(dialect, rate_limits=False, miner_keys=KEYS) as devnet:
        # Given rig A running a GPU job, and rig B with a free GPU
        a = Rig(tmp_path, devnet, "rig-a", KEYS[0], redis_server.url, gpu=True)
        await a.engine.wait_until(lambda s: s.fleet.state == "joined")
        job_id = (await devnet.submit_job({"type": "gpu-hold"}))["job_id"]
        await a.runner.wait_started(1)
        b = Rig(tmp_path, devnet, "rig-b", KEYS[1], redis_server.url, gpu=True)
        await b.engine.wait_until(lambda s: s.fleet.state == "joined")
        try:
            # When A's GPU falls off the bus mid-job
            a.lose_gpu()
            # Then the job goes to the fleet and B runs it, and delivers it once
            await a.engine.wait_until(lambda s: s.counters.handed_off == 1)
            await b.runner.wait_started(1)
            assert job_id in b.runner.devices
            b.runner.release.set()
            await b.engine.wait_until(lambda s: s.counters.delivered == 1)
            job = devnet.jobs[job_id]
            assert job["state"] == "COMPLETED" and job["receipts"] == 1
            (receipt,) = [r for r in devnet.receipts if r["job_id"] == job_id]
            # The receipt names the rig that sent the result: B is paid for the job
            assert receipt["provider"] == identity(devnet, "rig-b", KEYS[1])
            # A's heartbeat no longer counts it; its coordinator row says so
            a_id = identity(devnet, "rig-a", KEYS[0])
            await wait_for(lambda: devnet.miners[a_id]["inflight"] == 0, "A's inflight 0")
            assert a.engine.snapshot().counters.failed == 0
        finally:
            await b.stop()
            await a.stop()
        # And each ledger says who claimed the job and who ran it
        ja, jb = await a.journal(), await b.journal()
        try:
            assert (await ja.get(job_id)).state is JobState.HANDED_OFF  # type: ignore[union-attr]
            assert (await jb.get(job_id)).state is JobState.DELIVERED  # type: ignore[union-attr]
            row = await jb.fleet_job(job_id)
            assert row is not None
            assert (row["claimed_by"], row["ran_by"], row["delivered_by"]) == (
                "rig-a", "rig-b", "rig-b")
            assert len(await jb.receipts(job_id)) == 1
        finally:
            await ja.close()
            await jb.close()


async def test_a_gone_rigs_staged_outcomes_are_delivered_by_another_rig(
        tmp_path: Path, dialect: Dialect, redis_server: RedisServer) -> None:
    async with Devnet(dialect, rate_limits=False, miner_keys=KEYS) as devnet:
        # Given rig C whose outcomes the coordinator refuses (503) for now, so they stay staged
        devnet.inject("result", "status", status=503, times=None)
        c = Rig(tmp_path, devnet, "rig-c", KEYS[2], redis_server.url, cpu=3)
        await c.engine.wait_until(lambda s: s.fleet.state == "joined")
        jobs = [(await devnet.submit_job({"type": "sha256", "data": f"x{i}"}))["job_id"]
                for i in range(3)]  # C holds at most its slots' worth
        await c.engine.wait_until(lambda s: s.counters.completed == 3)
        r = aioredis.from_url(redis_server.url, decode_responses=True)
        owned = f"aitbc:fleet:{FLEET}:outcomes:rig-c"
        await wait_for(lambda: _scard(r, owned, 3), "C's outcomes mirrored")
        # When C vanishes with its state dir, and the coordinator takes results again
        c.fleet._wake.set()
        for task in c.tasks:
            task.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)
        shutil.rmtree(c.state)
        devnet.faults.clear()
        b = Rig(tmp_path, devnet, "rig-b", KEYS[1], redis_server.url)
        try:
            # Then B, once C's lease is over, delivers each of them exactly once
            await wait_for(lambda: all(devnet.jobs[j]["state"] == "COMPLETED" for j in jobs),
                           "every job completed", timeout=60)
            await b.engine.wait_until(lambda s: s.counters.delivered == 3)
            assert [devnet.jobs[j]["receipts"] for j in jobs] == [1] * 3
            assert all(r2["provider"] == identity(devnet, "rig-b", KEYS[1])
                       for r2 in devnet.receipts)
            assert await r.scard(owned) == 0
        finally:
            await b.stop()
            await r.aclose()
        jb = await b.journal()
        try:
            row = await jb.fleet_job(jobs[0])
            assert row is not None and (row["claimed_by"], row["ran_by"], row["delivered_by"]) \
                == ("rig-c", "rig-c", "rig-b")
            # each job has one receipt in B's journal, counted. (It may carry the possible-
            # duplicate flag: C may have vanished holding a send permit, and an answer lost
            # after a 5xx leaves a send uncertain; the coordinator's count above is the fact.)
            for job in jobs:
                (receipt,) = await jb.receipts(job)
                assert receipt.counted
        finally:
            await jb.close()


async def _scard(r: aioredis.Redis, key: str, want: int) -> bool:
    return int(await r.scard(key)) == want


async def test_redis_unreachable_at_start_the_rig_works_alone_then_joins(
        tmp_path: Path, redis_server_factory: Any) -> None:
    server: RedisServer = redis_server_factory.make()
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        a = Rig(tmp_path, devnet, "rig-a", KEYS[0], server.url)
        try:
            # Given no Redis at the rig's start: it says so, and works alone
            snap = await a.engine.wait_until(lambda s: s.fleet.state == "unreachable")
            assert FLEET_UNREACHABLE in snap.warnings
            for i in range(3):
                await devnet.submit_job({"type": "sha256", "data": f"alone{i}"})
            await a.engine.wait_until(lambda s: s.counters.delivered == 3)
            # When Redis comes up, the rig joins: lease, heartbeat, history
            server.start()
            snap = await a.engine.wait_until(lambda s: s.fleet.state == "joined")
            assert FLEET_UNREACHABLE not in snap.warnings
            r = aioredis.from_url(server.url, decode_responses=True)
            try:
                assert await r.zscore(f"aitbc:fleet:{FLEET}:rigs", "rig-a") is not None
                await wait_for(lambda: _exists(r, f"aitbc:fleet:{FLEET}:rig:rig-a"),
                               "heartbeat hash")
                beat = await r.hgetall(f"aitbc:fleet:{FLEET}:rig:rig-a")
                assert beat["state"] == "running" and beat["completed"] == "3"
                # the samples taken while Redis was away are written now (history kept)
                assert await r.xlen(f"aitbc:fleet:{FLEET}:metrics:rig-a") >= 1
                # and work after joining goes through the fleet's fencing
                job = (await devnet.submit_job({"type": "noop"}))["job_id"]
                await a.engine.wait_until(lambda s: s.counters.delivered == 4)
                key = f"aitbc:fleet:{FLEET}:outcome:{job}"
                await wait_for(lambda: _field_is(r, key, "state", "done"), "job marked done")
                assert await r.hget(key, "delivered_by") == "rig-a"
            finally:
                await r.aclose()
        finally:
            await a.stop()


async def _field_is(r: aioredis.Redis, key: str, field: str, want: str) -> bool:
    return bool(await r.hget(key, field) == want)


async def _exists(r: aioredis.Redis, key: str) -> bool:
    return bool(await r.exists(key))


async def test_a_rig_joins_as_a_redis_acl_user_and_a_wrong_password_keeps_it_alone(
        tmp_path: Path, redis_server: RedisServer) -> None:
    good = redis_server.acl_user("rig-a", "s3cret", f"~aitbc:fleet:{FLEET}:* +@all")
    bad = good.replace("s3cret", "wrong")
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        a = Rig(tmp_path, devnet, "rig-a", KEYS[0], good)
        b = Rig(tmp_path, devnet, "rig-b", KEYS[1], bad)
        try:
            await a.engine.wait_until(lambda s: s.fleet.state == "joined")
            snap = await b.engine.wait_until(lambda s: s.fleet.state == "unreachable")
            assert snap.fleet.message is not None and "s3cret" not in snap.fleet.message
            assert "wrong" not in snap.fleet.message
            await devnet.submit_job({"type": "noop"})
            await devnet.submit_job({"type": "noop"})
            await a.engine.wait_until(lambda s: s.counters.delivered >= 1)
        finally:
            await a.stop()
            await b.stop()


class DownBackend(HoldingGpuRunner):
    """``gpu-hold`` on a rig whose (LLM) backend is down."""

    async def run(self, payload: Any, ctx: Any) -> Any:
        raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE, "backend at 127.0.0.1:9 refused")


@pytest.mark.parametrize("reason", ["drain deadline", "no slot of its kind",
                                    "backend down"])
async def test_other_local_reasons_hand_the_job_to_a_rig_that_can_run_it(
        tmp_path: Path, redis_server: RedisServer, reason: str) -> None:
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        # Given rig A holding a GPU job it will not finish: a drain whose grace runs out,
        # or a GPU job on a rig with no GPU slot at all
        a = Rig(tmp_path, devnet, "rig-a", KEYS[0], redis_server.url,
                gpu=reason != "no slot of its kind",
                runner=DownBackend() if reason == "backend down" else None)
        await a.engine.wait_until(lambda s: s.fleet.state == "joined")
        job_id = (await devnet.submit_job({"type": "gpu-hold"}))["job_id"]
        if reason == "drain deadline":
            await a.runner.wait_started(1)
            a.engine.drain(grace_s=0.1)
        await a.engine.wait_until(lambda s: s.counters.handed_off == 1)
        b = Rig(tmp_path, devnet, "rig-b", KEYS[1], redis_server.url, gpu=True)
        try:
            # Then rig B runs it and delivers it, once
            await b.runner.wait_started(1)
            b.runner.release.set()
            await b.engine.wait_until(lambda s: s.counters.delivered == 1)
            assert devnet.jobs[job_id]["receipts"] == 1
            assert a.engine.snapshot().counters.failed == 0
        finally:
            await b.stop()
            await a.stop()


async def test_pause_and_drain_sent_through_redis_reach_the_rig_named_and_no_other(
        tmp_path: Path, redis_server: RedisServer) -> None:
    from aitbc_miner.fleet.commands import send_command

    operator = redis_server.acl_user("ops-ann", "pw", f"~aitbc:fleet:{FLEET}:* +@all")
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        a = Rig(tmp_path, devnet, "rig-a", KEYS[0], redis_server.url)
        b = Rig(tmp_path, devnet, "rig-b", KEYS[1], redis_server.url)
        ops = aioredis.from_url(operator)
        try:
            for rig in (a, b):
                await rig.engine.wait_until(lambda s: s.fleet.state == "joined")
            await send_command(ops, FLEET, "rig-b", "pause")
            await b.engine.wait_until(lambda s: s.mode.value == "paused")
            await send_command(ops, FLEET, "rig-b", "drain")
            await b.engine.wait_until(lambda s: s.mode.value == "drained")
            assert a.engine.snapshot().mode.value == "running"
        finally:
            await ops.aclose()
            await a.stop()
            await b.stop()
