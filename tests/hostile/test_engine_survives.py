"""One job never ends the engine: a hostile payload, an id that is not one, a claim the
journal refuses, a failure that escapes a job task. Each such job gets an outcome with a
code (or, without a safe id, is skipped) and the other jobs go on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.jobrun import JobRun
from aitbc_miner.protocol import AssignedJob

# The code of a failure is visible at the coordinator on 2026-01 ("<code>: <message>").
ON_2026_01 = pytest.mark.parametrize("dialect", [Dialect.V2026_01], ids=["2026-01"])


@ON_2026_01
async def test_a_lone_surrogate_type_fails_its_job_alone(
    devnet: Devnet, make_engine, run_engine
) -> None:
    # Given a job that holds a slot for a while, then one whose type is a lone surrogate
    # (valid JSON; it used to make SQLite fail in the claim and end the agent)
    slow = (await devnet.submit_job({"type": "sleep", "seconds": 0.3}))["job_id"]
    bad = (await devnet.submit_job({"type": "\ud800"}))["job_id"]
    engine = make_engine(devnet.url, cpu=2)
    running = run_engine(engine)
    # When both are dealt with
    snap = await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=10)
    # Then the engine runs on: the slow job completed, the hostile one failed E_BADJOB
    assert not running.task.done()
    assert snap.counters.completed == 1 and snap.counters.failed == 1
    assert devnet.jobs[slow]["state"] == "COMPLETED"
    assert devnet.jobs[bad]["error"].startswith("E_BADJOB: payload has a string with")


@pytest.mark.parametrize("job", [
    {"job_id": "../escape", "payload": {"type": "noop"}},
    {"job_id": "a\nb", "payload": {"type": "noop"}},
    {"job_id": None, "payload": {"type": "noop"}},
    AssignedJob(job_id="x/../../y?z#w", payload={"type": "noop"}),
], ids=["dotdot", "newline", "none", "parsed"])
async def test_a_job_with_an_id_that_is_not_one_is_never_stored_run_or_reported(
    job: Any, devnet: Devnet, make_engine, run_engine, read_journal, tmp_path: Path
) -> None:
    # Given a running miner
    engine = make_engine(devnet.url, cpu=1)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=10)
    requests = len(devnet.request_log)
    # When the claim path is handed a job whose id is not a job id
    await engine._start_job(job)
    # Then nothing was claimed, stored, written or sent about it, and the miner goes on
    done = (await devnet.submit_job({"type": "noop"}))["job_id"]
    await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=10)
    assert not running.task.done()
    assert engine.snapshot().counters.claimed == 1
    records, _ = await read_journal(engine)
    assert list(records) == [done]
    assert [p.name for p in (tmp_path / "miner" / "jobs").iterdir()] == [done]
    sent = list(devnet.request_log)[requests:]
    assert not any("escape" in line or "%0A" in line for line in sent), sent


@ON_2026_01
async def test_a_claim_the_journal_refuses_fails_that_job_with_e_internal(
    devnet: Devnet, make_engine, run_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running miner whose journal refuses the next claim once
    engine = make_engine(devnet.url, cpu=1)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=10)
    claim = engine.core.journal.claim
    refusals = []

    async def refuse_once(job_id: str, payload: Any, constraints: Any) -> bool:
        if not refusals:
            refusals.append(job_id)
            raise sqlite3.OperationalError("disk I/O error")
        return await claim(job_id, payload, constraints)

    monkeypatch.setattr(engine.core.journal, "claim", refuse_once)
    # When two jobs come
    first = (await devnet.submit_job({"type": "noop"}))["job_id"]
    second = (await devnet.submit_job({"type": "noop"}))["job_id"]
    snap = await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=10)
    # Then the refused one was failed E_INTERNAL (naming the error), the other completed
    assert refusals == [first] and not running.task.done()
    assert devnet.jobs[first]["error"].startswith("E_INTERNAL: miner error: OperationalError")
    assert devnet.jobs[second]["state"] == "COMPLETED"
    assert snap.counters.failed == 1 and snap.counters.completed == 1


@ON_2026_01
async def test_a_failure_escaping_a_job_task_fails_that_job_not_the_engine(
    devnet: Devnet, make_engine, run_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a miner whose failure path itself breaks once (a bug past run()'s handlers)
    stage_failure = JobRun._stage_failure
    broken = []

    async def break_once(self: JobRun, *args: Any, **kwargs: Any) -> None:
        if not broken:
            broken.append(args[0].job_id)
            raise RuntimeError("bug in the failure path")
        await stage_failure(self, *args, **kwargs)

    monkeypatch.setattr(JobRun, "_stage_failure", break_once)
    engine = make_engine(devnet.url, cpu=1)
    running = run_engine(engine)
    # When a job that fails comes, then one that completes
    failing = (await devnet.submit_job({"type": "transcribe", "url": "u"}))["job_id"]
    fine = (await devnet.submit_job({"type": "noop"}))["job_id"]
    await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=10)
    # Then the failing job was reported E_INTERNAL, and the engine went on to the next
    assert broken == [failing] and not running.task.done()
    assert devnet.jobs[failing]["error"].startswith("E_INTERNAL: miner error: RuntimeError")
    assert devnet.jobs[fine]["state"] == "COMPLETED"
    assert not engine.snapshot().jobs and all(s.job_id is None for s in engine.core.pool.slots)
