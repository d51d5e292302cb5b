"""Operator commands in-process: pause/resume, drain/undrain, drain-and-exit, cancel."""

from __future__ import annotations

import asyncio

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.snapshot import Mode, SlotState

LONG_S = 30.0  # a job that would outlive the test unless it is canceled


async def _submit(devnet: Devnet, payload: dict, n: int = 1) -> list[str]:
    return [(await devnet.submit_job(payload))["job_id"] for _ in range(n)]


def _canceled_text(devnet: Devnet, reason: str) -> str:
    """What a client reads for a job the miner failed with E_CANCELED."""
    text = f"canceled by {reason}"
    return f"E_CANCELED: {text}" if devnet.dialect is Dialect.V2026_01 else text


async def test_pause_stops_claiming_while_running_jobs_finish_and_resume_claims_again(
    devnet: Devnet, make_engine, run_engine
) -> None:
    # Given a miner with two slots running two jobs
    running_ids = await _submit(devnet, {"type": "sleep", "seconds": 0.5}, 2)
    engine = make_engine(devnet.url, cpu=2)
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 2, timeout=10)
    # When the operator pauses and more work arrives
    engine.pause()
    snap = await engine.wait_until(lambda s: s.mode is Mode.PAUSED and s.polls_in_flight == 0,
                                   timeout=5)
    polls_at_pause = devnet.requests["poll"]
    waiting = await _submit(devnet, {"type": "noop"}, 2)
    # Then the running jobs finish and are delivered...
    snap = await engine.wait_until(lambda s: s.counters.delivered == 2 and not s.jobs, timeout=10)
    assert {devnet.jobs[j]["state"] for j in running_ids} == {"COMPLETED"}
    # ...but nothing new is claimed: no poll since the pause, the new jobs stay QUEUED
    assert snap.mode is Mode.PAUSED and snap.counters.claimed == 2
    assert devnet.requests["poll"] == polls_at_pause
    assert {devnet.jobs[j]["state"] for j in waiting} == {"QUEUED"}
    assert {s.state for s in snap.slots} == {SlotState.PAUSED}
    # When the operator resumes
    engine.resume()
    # Then the waiting jobs are claimed and completed
    snap = await engine.wait_until(lambda s: s.counters.delivered == 4, timeout=10)
    assert snap.mode is Mode.RUNNING
    assert {devnet.jobs[j]["state"] for j in waiting} == {"COMPLETED"}


async def test_drain_finishes_running_jobs_claims_nothing_new_and_becomes_drained(
    devnet: Devnet, make_engine, run_engine
) -> None:
    # Given a miner with two slots running two jobs
    running_ids = await _submit(devnet, {"type": "sleep", "seconds": 0.5}, 2)
    engine = make_engine(devnet.url, cpu=2)
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 2, timeout=10)
    # When the operator drains and more work arrives
    engine.drain()
    snap = await engine.wait_until(lambda s: s.mode is Mode.DRAINING, timeout=5)
    assert {s.state for s in snap.slots} == {SlotState.DRAINING}
    waiting = await _submit(devnet, {"type": "noop"})
    # Then the running jobs finish, their outcomes are delivered, and the miner is DRAINED
    snap = await engine.wait_until(
        lambda s: s.mode is Mode.DRAINED and s.counters.delivered == 2, timeout=10)
    assert {devnet.jobs[j]["state"] for j in running_ids} == {"COMPLETED"}
    # ...having claimed nothing new
    assert snap.counters.claimed == 2 and devnet.jobs[waiting[0]]["state"] == "QUEUED"
    # When the operator changes their mind
    engine.undrain()
    # Then the miner claims again
    snap = await engine.wait_until(lambda s: s.counters.delivered == 3, timeout=10)
    assert snap.mode is Mode.RUNNING and devnet.jobs[waiting[0]]["state"] == "COMPLETED"


async def test_drain_with_exit_when_drained_makes_run_return_after_the_last_job(
    devnet: Devnet, make_engine, run_engine, miner_at
) -> None:
    # Given a miner running one job, with another queued
    [job_id] = await _submit(devnet, {"type": "sleep", "seconds": 0.5})
    engine = make_engine(devnet.url, cpu=1)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    [waiting] = await _submit(devnet, {"type": "noop"})
    # When the operator drains and asks to exit once drained
    engine.drain(exit_when_drained=True)
    # Then run() returns by itself once the job is done
    async with asyncio.timeout(10):
        await running.task
    snap = engine.snapshot()
    assert snap.mode is Mode.STOPPED
    # ...with the job's outcome delivered first and nothing new claimed
    assert devnet.jobs[job_id]["state"] == "COMPLETED" and devnet.jobs[job_id]["receipts"] == 1
    assert snap.counters.claimed == 1 and devnet.jobs[waiting]["state"] == "QUEUED"
    # ...and the coordinator told the miner is gone (so it holds no job back for it)
    assert miner_at(devnet)["status"] == "OFFLINE"


async def test_drain_with_a_grace_period_cancels_jobs_that_outlive_it(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a miner running a job that would take far too long
    [job_id] = await _submit(devnet, {"type": "sleep", "seconds": LONG_S})
    engine = make_engine(devnet.url, cpu=1)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    # When the operator drains to exit with a short grace period
    engine.drain(exit_when_drained=True, grace_s=0.3)
    # Then after the grace the job is canceled, reported once as E_CANCELED, and run() returns
    async with asyncio.timeout(10):
        await running.task
    job = devnet.jobs[job_id]
    assert job["state"] == "FAILED" and job["fail_calls"] == 1
    assert job["error"] == _canceled_text(devnet, "drain grace elapsed")
    records, _ = await read_journal(engine)
    assert records[job_id].error_code == "E_CANCELED" and records[job_id].state.value == "delivered"


async def test_canceling_a_running_job_reports_e_canceled_to_the_coordinator(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a miner running a long job
    [job_id] = await _submit(devnet, {"type": "sleep", "seconds": LONG_S})
    engine = make_engine(devnet.url, cpu=1)
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    # When the operator cancels it
    assert engine.cancel(job_id) is True
    # Then it is failed once at the coordinator with E_CANCELED, and counted as canceled
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=10)
    assert snap.counters.canceled == 1 and snap.counters.completed == 0 and not snap.jobs
    job = devnet.jobs[job_id]
    assert job["state"] == "FAILED" and job["fail_calls"] == 1 and job["receipts"] == 0
    assert job["error"] == _canceled_text(devnet, "operator")
    records, _ = await read_journal(engine)
    assert records[job_id].error_code == "E_CANCELED"
    assert records[job_id].outcome is not None and records[job_id].outcome.value == "canceled"
    # ...and a second cancel (or one for a job the miner does not hold) is a no-op
    assert engine.cancel(job_id) is False and engine.cancel("no-such-job") is False


async def test_canceling_a_job_waiting_for_a_slot_reports_it_without_running_it(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a miner whose only CPU slot is busy and a second CPU job claimed (it has a GPU
    # slot too, so it registers room for two) and waiting for that slot
    [busy] = await _submit(devnet, {"type": "sleep", "seconds": LONG_S})
    [queued] = await _submit(devnet, {"type": "noop"})
    engine = make_engine(devnet.url, cpu=1, gpu=1)
    run_engine(engine)
    snap = await engine.wait_until(lambda s: len(s.jobs) == 2 and s.running == 1, timeout=10)
    view = snap.job(queued)
    assert view is not None and view.state == "queued" and view.slot_id is None
    # When the operator cancels the waiting job
    assert engine.cancel(queued) is True
    # Then it is reported E_CANCELED without ever having run, and the busy job goes on
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=10)
    assert devnet.jobs[queued]["state"] == "FAILED"
    assert devnet.jobs[queued]["error"] == _canceled_text(devnet, "operator")
    records, _ = await read_journal(engine)
    assert records[queued].error_code == "E_CANCELED" and records[queued].started_at is None
    assert [j.job_id for j in snap.jobs] == [busy] and devnet.jobs[busy]["state"] == "RUNNING"
    # (and the busy one ends as a cancel too, so the test need not wait for it)
    assert engine.cancel(busy)
    await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=10)
    assert devnet.jobs[busy]["fail_calls"] == 1
