"""The miner itself dies (SIGKILL) mid-run and is started again on the same state."""

from __future__ import annotations

import signal

import pytest

from .conftest import DevnetProc, MinerLauncher, event_is

pytestmark = pytest.mark.timeout(90)

INTERRUPTED_TEXT = "the miner stopped while this job was running; it is not re-run"


@pytest.mark.parametrize("dialect", ["2026-01", "2026-08"])
def test_a_killed_miner_reruns_nothing_and_delivers_every_staged_outcome_once(
    start_devnet, miner: MinerLauncher, dialect: str
) -> None:
    # Given a headless miner with five CPU slots whose /result answers keep failing (503)
    # (undelivered outcomes fill the coordinator's concurrency too: 2 staged + 3 running)
    devnet: DevnetProc = start_devnet(dialect)
    proc = miner.start(devnet, SLOTS__CPU="5")
    proc.wait_for(event_is("registered"))
    devnet.inject(endpoint="result", kind="status", status=503, times=None)
    # ...so two finished jobs' outcomes sit staged in its outbox,
    staged = [devnet.submit({"type": "echo", "data": f"staged-{i}"}) for i in range(2)]
    for job_id in staged:
        proc.wait_for(event_is("job_finished", job_id=job_id, outcome="completed"))
        proc.wait_for(event_is("delivery_problem", job_id=job_id))
    # ...and three sleep jobs are running
    running = [devnet.submit({"type": "sleep", "seconds": 30}) for _ in range(3)]
    for job_id in running:
        proc.wait_for(event_is("job_started", job_id=job_id))

    # When the miner is SIGKILLed
    proc.kill()
    with miner.journal() as db:
        states = dict(db.execute("SELECT job_id, state FROM jobs").fetchall())
    assert {states[j] for j in staged} <= {"staged", "uncertain"}, states
    assert {states[j] for j in running} == {"running"}, states
    # ...the coordinator recovers, and the miner is started again on the same state
    devnet.clear_faults()
    again = miner.start(devnet, SLOTS__CPU="5")

    # Then every staged outcome and every interrupted job is reported
    for job_id in staged + running:
        again.wait_for(event_is("outcome_delivered", job_id=job_id))
    # ...and the miner goes on with new work
    fresh = devnet.submit({"type": "noop"})
    again.wait_for(event_is("outcome_delivered", job_id=fresh))
    again.send(signal.SIGTERM)
    assert again.wait_exit() == 0, again.tail()

    # ...no job ran twice: the restarted miner never claimed or started an old job
    restarted = [ln for ln in again.lines()
                 if event_is("job_claimed")(ln) or event_is("job_started")(ln)]
    assert {ln["job_id"] for ln in restarted} == {fresh}
    with miner.journal() as db:
        running_marks = dict(db.execute(
            "SELECT job_id, COUNT(*) FROM transitions WHERE state='running' GROUP BY job_id"
        ).fetchall())
        codes = dict(db.execute("SELECT job_id, error_code FROM jobs").fetchall())
        states = dict(db.execute("SELECT job_id, state FROM jobs").fetchall())
    assert running_marks == {job_id: 1 for job_id in staged + running + [fresh]}
    assert states == {job_id: "delivered" for job_id in staged + running + [fresh]}
    assert {codes[j] for j in running} == {"E_INTERRUPTED"}
    # ...each staged outcome reached the coordinator exactly once (one receipt each)
    jobs = devnet.admin_state()["jobs"]
    for job_id in staged:
        job = jobs[job_id]
        assert (job["state"], job["result_calls"], job["fail_calls"], job["receipts"]) == (
            "COMPLETED", 1, 0, 1), job
    # ...and the jobs that were running are failed once, with the interruption visible
    for job_id in running:
        job = jobs[job_id]
        assert (job["state"], job["result_calls"], job["fail_calls"], job["receipts"]) == (
            "FAILED", 0, 1, 0), job
        view = devnet.job(job_id)
        if dialect == "2026-01":  # the client sees "<code>: <message>"
            assert view["error"] == f"E_INTERRUPTED: {INTERRUPTED_TEXT}", view
        else:  # 2026-08 shows the client the message alone
            assert view["error"] == INTERRUPTED_TEXT, view
