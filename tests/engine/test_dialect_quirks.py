"""Coordinator quirks the miner must ride out: 2026-08's /fail inflight leak, and 429s.

On 2026-08 ``/fail`` leaves the coordinator's ``inflight`` counter high and only a
heartbeat (which overwrites it) brings it down; a 1-slot miner that waited for its
regular heartbeat would idle a whole interval after every failure. 2026-08 also
rate-limits per IP and answers 429 with ``Retry-After``, which the miner must honour.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.snapshot import Event

HEARTBEAT_S = 3600.0  # far longer than the whole test may wait


async def test_failing_jobs_do_not_stall_a_one_slot_miner_until_its_next_heartbeat(
    devnet: Devnet, make_engine, run_engine, miner_at, eventually
) -> None:
    # Given five jobs this miner cannot run, then five it can, and a miner with one slot
    # whose regular heartbeat is 30 s away
    bad = [(await devnet.submit_job({"type": "transcribe", "url": f"u{i}"}))["job_id"]
           for i in range(5)]
    good = [(await devnet.submit_job({"type": "sha256", "data": str(i)}))["job_id"]
            for i in range(5)]
    engine = make_engine(devnet.url, cpu=1, heartbeat_interval_s=HEARTBEAT_S)
    run_engine(engine)
    # When all ten outcomes are delivered (a miner that waited for its next heartbeat
    # after a failure would not get there before the wait gives up)
    snap = await engine.wait_until(lambda s: s.counters.delivered == 10, timeout=60)
    assert snap.counters.failed == 5 and snap.counters.completed == 5
    # ...each failure was reported once and each success made one receipt
    jobs = devnet.jobs
    assert [(jobs[j]["state"], jobs[j]["fail_calls"]) for j in bad] == [("FAILED", 1)] * 5
    assert [(jobs[j]["state"], jobs[j]["receipts"]) for j in good] == [("COMPLETED", 1)] * 5
    assert all("is not supported" in jobs[j]["error"] for j in bad)
    # ...and the coordinator is left believing the miner holds nothing
    await eventually(lambda: miner_at(devnet)["inflight"] == 0, timeout=5,
                     what="coordinator inflight back to 0")


async def test_429_bursts_on_poll_result_and_fail_are_ridden_out_exactly_once(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a coordinator that refuses the first calls of poll, result and fail with
    # 429 + Retry-After: 1, and three good jobs and one it cannot run
    good = [(await devnet.submit_job({"type": "sha256", "data": str(i)}))["job_id"]
            for i in range(3)]
    bad = (await devnet.submit_job({"type": "transcribe", "url": "u"}))["job_id"]
    devnet.inject("poll", "status", status=429, retry_after=1, times=1)
    devnet.inject("result", "status", status=429, retry_after=1, times=2)
    devnet.inject("fail", "status", status=429, retry_after=1, times=1)
    engine = make_engine(devnet.url, cpu=2, pinned_key=devnet.public_key_id)
    events = engine.subscribe()
    run_engine(engine)
    # When every outcome has been delivered
    snap = await engine.wait_until(lambda s: s.counters.delivered == 4, timeout=20)
    # Then each refused call waited the server's Retry-After (not its own shorter backoff)
    seen: list[Event] = events.drain()
    poll_waits = [e.delay_s for e in seen if e.name == "backing_off"  # type: ignore[attr-defined]
                  and e.loop == "poll"]  # type: ignore[attr-defined]
    send_waits = [(e.endpoint, e.delay_s) for e in seen  # type: ignore[attr-defined]
                  if e.name == "delivery_problem"]
    assert poll_waits == [1.0], "one log line per streak, with the server's delay"
    assert sorted(send_waits) == [("fail", 1.0), ("result", 1.0), ("result", 1.0)]
    # ...and everything was delivered exactly once: one receipt per good job, one failure
    jobs = devnet.jobs
    assert [jobs[j]["receipts"] for j in good] == [1, 1, 1]
    assert [jobs[j]["result_calls"] for j in good] == [1, 1, 1]
    assert jobs[bad]["fail_calls"] == 1 and jobs[bad]["state"] == "FAILED"
    assert devnet.requests["result"] == 3 + 2 and devnet.requests["fail"] == 1 + 1
    assert snap.counters.rejected == 0 and snap.counters.uncertain == 0
    _, receipts = await read_journal(engine)
    assert sorted(r.job_id for r in receipts if r.counted) == sorted(good)


@pytest.mark.parametrize("dialect", [Dialect.V2026_08], ids=["2026-08"])
async def test_a_poll_backoff_for_retry_after_is_not_cut_short_by_a_finished_job(
    devnet: Devnet, make_engine, run_engine
) -> None:
    # Given a miner with two slots: its first poll claims a short job, its second is
    # refused with 429 and Retry-After: 2, and a second job waits in the queue
    first = (await devnet.submit_job({"type": "sleep", "seconds": 0.2}))["job_id"]
    second = (await devnet.submit_job({"type": "noop"}))["job_id"]
    devnet.inject("poll", "delay", delay=0.0)  # the first poll is answered normally
    devnet.inject("poll", "status", status=429, retry_after=2)
    engine = make_engine(devnet.url, cpu=2)
    events = engine.subscribe()
    run_engine(engine)
    # When the first job finishes during that wait (which frees a slot and wakes the poller)
    refused_at = None
    claimed_at: dict[str, float] = {}
    async with asyncio.timeout(10):
        async for event in events:
            if event.name == "backing_off" and refused_at is None:
                refused_at = time.monotonic()
            if event.name == "job_claimed":
                claimed_at[event.job_id] = time.monotonic()  # type: ignore[attr-defined]
                if event.job_id == second:  # type: ignore[attr-defined]
                    break
    # Then the poller still waited out the Retry-After before asking again
    assert first in claimed_at and refused_at is not None
    assert claimed_at[second] - refused_at >= 1.9, f"{claimed_at[second] - refused_at:.2f}s"
    assert devnet.requests["poll"] >= 3


@pytest.mark.parametrize("dialect", [Dialect.V2026_08], ids=["2026-08"])
async def test_real_2026_08_rate_limits_are_ridden_out_with_every_job_delivered_once(
    dialect: Dialect, make_engine, run_engine, read_journal
) -> None:
    # Given a 2026-08 coordinator with tight per-IP limits (per 1 s window) and eight jobs,
    # two of which fail
    limits = {"register": (5, 1.0), "heartbeat": (2, 1.0), "poll": (4, 1.0),
              "result": (3, 1.0), "fail": (1, 1.0)}
    async with Devnet(dialect, rate_limits=limits) as devnet:
        good = [(await devnet.submit_job({"type": "sha256", "data": str(i)}))["job_id"]
                for i in range(6)]
        bad = [(await devnet.submit_job({"type": "transcribe", "url": str(i)}))["job_id"]
               for i in range(2)]
        engine = make_engine(devnet.url, cpu=4, pinned_key=devnet.public_key_id,
                             heartbeat_interval_s=1.0)
        events = engine.subscribe(maxlen=10_000)
        running = run_engine(engine)
        # When the miner works through them
        snap = await engine.wait_until(lambda s: s.counters.delivered == 8, timeout=30)
        await running.stop()
        # Then it met 429s and still delivered everything exactly once
        refused = [e for e in events.drain() if "429" in (getattr(e, "reason", None) or "")]
        assert refused, "the limits were actually reached"
        assert snap.counters.rejected == 0
        jobs = devnet.jobs
        assert [jobs[j]["receipts"] for j in good] == [1] * 6
        assert [jobs[j]["fail_calls"] for j in bad] == [1, 1]
        _, receipts = await read_journal(engine)
        assert sorted(r.job_id for r in receipts if r.counted) == sorted(good)
