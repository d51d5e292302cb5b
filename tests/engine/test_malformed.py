"""Malformed coordinator answers never crash the engine; each streak is logged once.

Variants (devnet faults): ``bad_json``, ``missing_fields``, ``wrong_types`` (the call
was acted on, the answer is garbled), ``html_200`` and ``html_502`` (a proxy's page;
nothing acted on). The session and poll loops log one problem per streak and retry
with backoff; the outbox logs each attempt and resolves the delivery per its policy.
"""

from __future__ import annotations

import logging

import pytest

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.snapshot import Event, Link, Mode

VARIANTS = ["bad_json", "missing_fields", "wrong_types", "html_200", "html_502"]
ACTS_FIRST = {"bad_json", "missing_fields", "wrong_types"}  # the coordinator acted, then garbled
STREAK = 2  # garbled answers in a row


def _problems(events: list[Event], endpoint: str) -> tuple[list[Event], list[Event]]:
    """(protocol_error events, backing_off events) that name ``endpoint``."""
    protocol = [e for e in events if e.name == "protocol_error"
                and e.endpoint == endpoint]  # type: ignore[attr-defined]
    backing = [e for e in events if e.name == "backing_off"
               and e.reason.startswith(f"{endpoint}:")]  # type: ignore[attr-defined]
    return protocol, backing


# The session and poll loops read answers the same way on both lines: one line suffices
# (the outcome tests below run on both, where the delivery policy differs).
ONE_LINE = pytest.mark.parametrize("dialect", [Dialect.V2026_08], ids=["2026-08"])


@ONE_LINE
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("endpoint", ["register", "heartbeat"])
async def test_a_garbled_session_answer_is_logged_once_per_streak_and_retried(
    endpoint: str, variant: str, devnet: Devnet, make_engine, run_engine, caplog
) -> None:
    # Given a coordinator whose next two answers to this session call are garbled the same way
    devnet.inject(endpoint, "malformed", variant=variant, times=STREAK)
    engine = make_engine(devnet.url, cpu=1)
    events = engine.subscribe()
    caplog.set_level(logging.WARNING, logger="aitbc_miner")
    running = run_engine(engine)
    # When the miner keeps at it until a heartbeat goes through
    snap = await engine.wait_until(
        lambda s: s.connection.last_heartbeat_at is not None
        and s.connection.link is Link.REGISTERED, timeout=10)
    # Then the engine is alive and registered, having made the call once per garbled answer + 1
    assert not running.task.done()
    assert devnet.requests[endpoint] >= STREAK + 1 and devnet.faults.list() == []
    assert snap.connection.concurrency == 1
    # ...and the streak was logged once, naming the endpoint (a 502 page is "unavailable",
    # not a protocol error; the rest are protocol errors)
    protocol, backing = _problems(events.drain(), endpoint)
    assert len(backing) == 1, [e.message for e in backing]
    assert len(protocol) == (0 if variant == "html_502" else 1)
    logged = [r for r in caplog.records if r.getMessage().startswith(f"{endpoint}:")
              or f"from {endpoint}:" in r.getMessage()]
    assert len(logged) == len(backing) + len(protocol), [r.getMessage() for r in logged]


@ONE_LINE
@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_garbled_poll_answer_is_logged_once_per_streak_and_polling_goes_on(
    variant: str, devnet: Devnet, make_engine, run_engine, eventually
) -> None:
    # Given a one-slot miner whose regular heartbeat is far away, a queued job, and the
    # next two poll answers garbled (after the coordinator acted, for the JSON variants:
    # the first hands out the queued job in an answer the miner cannot read)
    lost = (await devnet.submit_job({"type": "noop"}))["job_id"]
    devnet.inject("poll", "malformed", variant=variant, times=STREAK)
    engine = make_engine(devnet.url, cpu=1, heartbeat_interval_s=30.0)
    events = engine.subscribe()
    running = run_engine(engine)
    # When it polls through them and another job is queued
    await eventually(lambda: devnet.faults.list() == [], timeout=10, what="faults consumed")
    later = (await devnet.submit_job({"type": "noop"}))["job_id"]
    # Then the later job is claimed and delivered without waiting for the 30 s heartbeat
    # (the miner heartbeats at once after an answer it could not read, which tells the
    # coordinator it holds nothing)
    await engine.wait_until(lambda s: any(o.job_id == later for o in s.recent), timeout=10)
    await engine.wait_until(lambda s: s.outbox == 0, timeout=10)
    assert not running.task.done()
    assert devnet.jobs[later]["state"] == "COMPLETED"
    # ...a job handed out in an unreadable answer is lost to the miner (it never learns
    # its id), while one the proxy kept is claimed after the streak
    if variant in ACTS_FIRST:
        assert devnet.jobs[lost]["state"] == "RUNNING"
    else:
        assert devnet.jobs[lost]["state"] == "COMPLETED"
    # ...and the streak was logged once, naming poll
    protocol, backing = _problems(events.drain(), "poll")
    assert len(backing) == 1, [e.message for e in backing]
    assert len(protocol) == (0 if variant == "html_502" else 1)


async def test_a_polled_job_with_a_malformed_payload_is_failed_with_e_badjob(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a queued job that the coordinator hands out with a payload that is not an object
    job_id = (await devnet.submit_job({"type": "noop"}))["job_id"]
    devnet.inject("poll", "status", status=200, act=True,
                  body=f'{{"job_id": "{job_id}", "payload": ["not", "an", "object"], '
                       f'"constraints": {{}}}}')
    engine = make_engine(devnet.url, cpu=1)
    run_engine(engine)
    # When the miner has dealt with it
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=10)
    # Then it was failed once at the coordinator with E_BADJOB, never run
    assert snap.counters.failed == 1 and snap.counters.completed == 0
    job = devnet.jobs[job_id]
    assert job["state"] == "FAILED" and job["fail_calls"] == 1 and job["receipts"] == 0
    assert "malformed" in job["error"]
    if devnet.dialect is Dialect.V2026_01:
        assert job["error"].startswith("E_BADJOB: ")
    records, _ = await read_journal(engine)
    assert records[job_id].error_code == "E_BADJOB" and records[job_id].started_at is None


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("endpoint", ["result", "fail"])
async def test_a_garbled_answer_to_an_outcome_is_resolved_per_policy_and_logged_per_attempt(
    endpoint: str, variant: str, devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given a job whose outcome goes to this endpoint, and one garbled answer to it armed
    payload = {"type": "noop"} if endpoint == "result" else {"type": "transcribe", "url": "u"}
    job_id = (await devnet.submit_job(payload))["job_id"]
    devnet.inject(endpoint, "malformed", variant=variant)
    engine = make_engine(devnet.url, cpu=1, pinned_key=devnet.public_key_id)
    events = engine.subscribe()
    running = run_engine(engine)
    # When the miner delivers it
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=10)
    # Then the engine lives on, and the one garbled answer was one logged attempt naming it
    assert not running.task.done() and snap.counters.rejected == 0
    problems = [e for e in events.drain() if e.name == "delivery_problem"]
    assert [(p.endpoint, p.attempt) for p in problems] == [(endpoint, 1)]  # type: ignore[attr-defined]
    assert f"{endpoint}:" in problems[0].reason  # type: ignore[attr-defined]
    # ...and it was delivered per the policy: a 502 page or an unreadable 200 that did not
    # act is resent once; one that acted is looked up (2026-08 /result) or resent
    job = devnet.jobs[job_id]
    acted = variant in ACTS_FIRST
    if endpoint == "result":
        resent_blind = acted and devnet.dialect is Dialect.V2026_01
        assert job["receipts"] == (2 if resent_blind else 1)
        # (looked up on 2026-08: it arrived, but its receipt never reached the miner)
        looked_up = acted and devnet.dialect is Dialect.V2026_08
        _, receipts = await read_journal(engine)
        assert [r.counted for r in receipts] == ([] if looked_up else [True])
    else:
        assert job["state"] == "FAILED"
        assert job["fail_calls"] == (2 if acted else 1)


@pytest.mark.parametrize("endpoint, status", [
    ("register", 422), ("heartbeat", 422), ("heartbeat", 400), ("poll", 404), ("poll", 422),
])
async def test_a_refusal_of_a_session_or_poll_call_is_reported_and_retried_not_a_crash(
    endpoint: str, status: int, devnet: Devnet, make_engine, run_engine
) -> None:
    # Given a coordinator that refuses the next two calls of this loop with a 4xx
    devnet.inject(endpoint, "status", status=status, times=STREAK)
    job_id = (await devnet.submit_job({"type": "noop"}))["job_id"]
    engine = make_engine(devnet.url, cpu=1)
    events = engine.subscribe()
    running = run_engine(engine)
    # When the miner carries on
    await engine.wait_until(lambda s: s.counters.delivered == 1 or s.mode is Mode.STOPPED,
                            timeout=10)
    # Then the engine did not crash: it backed off, asked again and got its work done
    assert not running.task.done(), running.task.exception()
    assert devnet.jobs[job_id]["state"] == "COMPLETED"
    # ...and the refusal was logged once, naming the call and the status
    backing = [e for e in events.drain() if e.name == "backing_off"
               and e.reason.startswith(f"{endpoint}: {status}")]  # type: ignore[attr-defined]
    assert len(backing) == 1, [e.message for e in backing]


@ONE_LINE
async def test_a_coordinator_that_forgets_the_miner_right_after_registering_is_not_hammered(
    devnet: Devnet, make_engine, run_engine
) -> None:
    # Given a coordinator that answers the next four heartbeats "miner not registered" (404),
    # however often the miner registers in between
    devnet.inject("heartbeat", "status", status=404, times=4)
    engine = make_engine(devnet.url, cpu=1)
    events = engine.subscribe()
    run_engine(engine)
    # When the miner gets through to a heartbeat
    await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=10)
    # Then it registered again after each 404, backing off between the repeats...
    assert devnet.requests["register"] == 5 and devnet.requests["heartbeat"] == 5
    backing = [e for e in events.drain() if e.name == "backing_off"]
    # ...and said so once, naming the call, instead of spinning silently
    assert [(e.loop, e.reason.split(":")[0]) for e in backing] == [  # type: ignore[attr-defined]
        ("session", "heartbeat")]
    assert [e.attempt for e in backing] == [1]  # type: ignore[attr-defined]
