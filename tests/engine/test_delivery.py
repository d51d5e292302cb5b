"""Delivering outcomes exactly once: uncertain sends, outages, 5xx bursts and refusals.

The policy under test is the outbox's (aitbc_miner/engine/outbox.py): a send that may
have arrived is resolved by looking where the coordinator allows it (2026-08 earnings)
and resent where it does not (2026-01, one receipt counted per job); a send that
provably failed (refused connection, 5xx, 429) is retried with capped backoff; 404/422
end the job ``rejected`` at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.bus import Subscription
from aitbc_miner.engine.snapshot import Event

BACKOFF_CAP_S = 5.0  # Backoff.cap_s: no retry waits longer
MARGIN_S = 3.0  # a loaded 2-core machine, plus one request round


async def next_event(sub: Subscription, match: Callable[[Event], bool],
                     timeout: float = 10.0) -> Event:
    """The first event from ``sub`` that ``match``es (earlier ones are consumed)."""
    async with asyncio.timeout(timeout):
        async for event in sub:
            if match(event):
                return event
    raise AssertionError("the engine stopped before the event came")


def named(name: str, job_id: str | None = None) -> Callable[[Event], bool]:
    return lambda e: e.name == name and (job_id is None or getattr(e, "job_id", None) == job_id)


@pytest.mark.parametrize("dialect", [Dialect.V2026_08], ids=["2026-08"])
async def test_an_uncertain_result_is_looked_up_on_2026_08_and_not_resent(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a coordinator that commits the next /result, then drops the connection unanswered
    job_id = (await devnet.submit_job({"type": "sha256", "data": "x"}))["job_id"]
    devnet.inject("result", "drop_after")
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id)
    run_engine(engine)
    # When the miner delivers the outcome
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=15)
    # Then it learned from the earnings list that the result arrived, and did not resend
    assert snap.counters.uncertain == 1 and snap.connection.lookup_supported is True
    assert devnet.jobs[job_id]["receipts"] == 1 and devnet.jobs[job_id]["result_calls"] == 1
    assert devnet.requests["result"] == 1 and devnet.requests["earnings"] >= 1
    records, receipts = await read_journal(engine)
    assert records[job_id].state.value == "delivered"
    steps = [s for s, _ in await engine.journal.transitions(job_id)]
    assert steps == ["claimed", "running", "staged", "uncertain", "delivered"]
    assert "earnings" in (records[job_id].last_error or "")
    # ...the receipt itself never reached the miner, so none is stored (and none is invented)
    assert receipts == []


@pytest.mark.parametrize("dialect", [Dialect.V2026_01], ids=["2026-01"])
async def test_an_uncertain_result_is_resent_on_2026_01_and_one_receipt_is_counted(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a 2026-01 coordinator (no way to ask) that commits the next /result, then drops
    job_id = (await devnet.submit_job({"type": "sha256", "data": "x"}))["job_id"]
    devnet.inject("result", "drop_after")
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id)
    run_engine(engine)
    # When the miner delivers the outcome
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=15)
    # Then, per the documented policy, it resent: the coordinator made two receipts...
    assert snap.counters.uncertain == 1 and snap.connection.lookup_supported is False
    assert devnet.jobs[job_id]["receipts"] == 2 and devnet.jobs[job_id]["result_calls"] == 2
    # ...while the miner's journal counts exactly one receipt for the job, the one it received
    _, receipts = await read_journal(engine)
    # (flagged as a possible duplicate: the coordinator may hold one more that we never saw)
    assert [(r.job_id, r.counted, r.duplicate) for r in receipts] == [(job_id, True, True)]
    assert receipts[0].receipt_id == devnet.receipts[-1]["receipt_id"]
    assert snap.counters.receipts == 1
    # ...and the journal says why it resent, so the operator can dispute the extra receipt
    steps = await engine.journal.transitions(job_id)
    assert [s for s, _ in steps] == ["claimed", "running", "staged", "uncertain", "staged",
                                     "uncertain", "delivered"]
    assert "policy: resend" in steps[4][1]


async def test_a_receipt_stored_again_under_its_id_shows_and_counts_once(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a delivered job and its receipt
    job_id = (await devnet.submit_job({"type": "sha256", "data": "x"}))["job_id"]
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id)
    run_engine(engine)
    await engine.wait_until(lambda s: s.counters.receipts == 1, timeout=15)
    receipt = devnet.receipts[-1]
    record = await engine.job_record(job_id)
    assert record is not None
    # When the same receipt arrives again (a coordinator answering with one it gave before)
    await engine.outbox._store_receipt(record, dict(receipt))
    # Then the journal's row is replaced, and the miner shows and counts it once
    snap = engine.snapshot()
    assert [r.receipt_id for r in snap.receipts] == [receipt["receipt_id"]]
    assert snap.counters.receipts == 1 and snap.counters.receipts_flagged == 0
    _, receipts = await read_journal(engine)
    assert [(r.receipt_id, r.counted) for r in receipts] == [(receipt["receipt_id"], True)]


async def test_outcomes_wait_out_a_stopped_coordinator_and_flow_again_after_restart(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a miner running a job
    job_id = (await devnet.submit_job({"type": "sleep", "seconds": 1.0}))["job_id"]
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id,
                         heartbeat_interval_s=1.0)
    events = engine.subscribe()
    run_engine(engine)
    await next_event(events, named("job_started", job_id))
    # When the coordinator goes away (connections refused) before the job ends
    await devnet.stop()
    problem = await next_event(events, named("delivery_problem", job_id), timeout=10)
    while problem.attempt < 3:  # type: ignore[attr-defined]  # retried, backing off further
        problem = await next_event(events, named("delivery_problem", job_id), timeout=10)
    assert engine.snapshot().counters.delivered == 0 and engine.snapshot().outbox == 1
    # ...and comes back on the same port with its state
    await devnet.start()
    restarted = time.monotonic()
    next_job = (await devnet.submit_job({"type": "noop"}))["job_id"]
    delivered_after: dict[str, float] = {}
    async with asyncio.timeout(15):
        async for event in events:
            if event.name == "outcome_delivered":
                delivered_after[event.job_id] = time.monotonic() - restarted  # type: ignore[attr-defined]
                if len(delivered_after) == 2:
                    break
    # Then the staged outcome is delivered within the backoff cap (plus a margin)...
    to_delivery, to_work = delivered_after[job_id], delivered_after[next_job]
    # ...and the miner is back to work: the next job is claimed and delivered too
    assert problem.delay_s <= BACKOFF_CAP_S  # type: ignore[attr-defined]
    assert to_delivery < problem.delay_s + MARGIN_S, f"{to_delivery:.1f}s"  # type: ignore[attr-defined]
    assert to_delivery < BACKOFF_CAP_S + MARGIN_S, f"{to_delivery:.1f}s"
    assert to_work < BACKOFF_CAP_S + MARGIN_S, f"{to_work:.1f}s"
    assert "ConnectError" in problem.reason  # type: ignore[attr-defined]
    # ...with nothing duplicated: one /result and one receipt per job, each counted once
    for jid in (job_id, next_job):
        assert devnet.jobs[jid]["state"] == "COMPLETED"
        assert devnet.jobs[jid]["receipts"] == 1 and devnet.jobs[jid]["result_calls"] == 1
    _, receipts = await read_journal(engine)
    assert sorted(r.job_id for r in receipts if r.counted) == sorted([job_id, next_job])


async def test_a_5xx_burst_on_result_is_retried_and_delivered_once(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a coordinator whose next /result answers are 502, 503, 500 (nothing acted on)
    job_id = (await devnet.submit_job({"type": "sha256", "data": "x"}))["job_id"]
    for status in (502, 503, 500):
        devnet.inject("result", "status", status=status)
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id)
    events = engine.subscribe()
    run_engine(engine)
    # When the miner delivers the outcome
    seen = []
    async with asyncio.timeout(15):
        async for event in events:
            if getattr(event, "job_id", None) == job_id and event.name in (
                    "delivery_problem", "outcome_delivered"):
                seen.append(event)
                if event.name == "outcome_delivered":
                    break
    # Then each 5xx was one logged attempt, numbered, naming the status and a bounded delay
    *problems, delivered = seen
    assert [p.attempt for p in problems] == [1, 2, 3]  # type: ignore[attr-defined]
    assert [p.reason.split()[1] for p in problems] == ["502", "503", "500"]  # type: ignore[attr-defined]
    assert all(0 <= p.delay_s <= BACKOFF_CAP_S for p in problems)  # type: ignore[attr-defined]
    # ...and the fourth send landed: one /result acted on, one receipt, counted
    assert delivered.attempts == 4  # type: ignore[attr-defined]
    assert devnet.requests["result"] == 4
    assert devnet.jobs[job_id]["receipts"] == 1 and devnet.jobs[job_id]["state"] == "COMPLETED"
    records, receipts = await read_journal(engine)
    assert records[job_id].state.value == "delivered" and records[job_id].attempts == 4
    assert [r.counted for r in receipts] == [True]


@pytest.mark.parametrize("status", [404, 422])
async def test_a_result_refused_for_good_ends_rejected_without_retrying(
    status: int, devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a coordinator that answers the next /result with a refusal (404 or 422)
    refused = (await devnet.submit_job({"type": "noop"}))["job_id"]
    devnet.inject("result", "status", status=status)
    engine = make_engine(devnet.url, cpu=1, heartbeat_interval_s=30.0)
    events = engine.subscribe()
    run_engine(engine)
    # When the miner delivers it
    problem = await next_event(events, named("delivery_problem", refused), timeout=15)
    snap = await engine.wait_until(lambda s: s.counters.rejected == 1 and s.outbox == 0,
                                   timeout=5)
    # Then the job ends rejected with the reason, and no retry is scheduled
    assert problem.delay_s is None and str(status) in problem.reason  # type: ignore[attr-defined]
    assert snap.counters.delivered == 0
    records, _ = await read_journal(engine)
    assert records[refused].state.value == "rejected" and records[refused].attempts == 1
    # ...and the miner goes on at once (its next heartbeat tells the coordinator it holds
    # nothing, long before the 30 s interval): a later job is delivered, the refused one
    # is never resent
    later = (await devnet.submit_job({"type": "noop"}))["job_id"]
    await next_event(events, named("outcome_delivered", later), timeout=10)
    assert devnet.requests["result"] == 2
    assert devnet.jobs[refused]["result_calls"] == 0 and devnet.jobs[later]["receipts"] == 1
