"""Signals reach the headless miner as real signals: SIGTERM/SIGINT drain, a second one cancels."""

from __future__ import annotations

import signal

import pytest

from .conftest import MINER_KEY, DevnetProc, MinerLauncher, event_is, message_has

pytestmark = pytest.mark.timeout(60)


def identity(devnet: DevnetProc) -> str:
    """How the devnet names our miner: the key on 2026-01, X-Miner-ID on 2026-08."""
    return MINER_KEY if devnet.dialect == "2026-01" else "rig-it"


@pytest.mark.parametrize(
    ("sig", "dialect"),
    [(signal.SIGTERM, "2026-08"), (signal.SIGINT, "2026-01")],
    ids=["SIGTERM-2026-08", "SIGINT-2026-01"],
)
def test_a_termination_signal_drains_running_jobs_then_exits_zero(
    start_devnet, miner: MinerLauncher, sig: signal.Signals, dialect: str
) -> None:
    # Given a headless miner with two CPU slots, both busy with short sleep jobs,
    # and two more jobs waiting in the coordinator's queue
    devnet = start_devnet(dialect)
    proc = miner.start(devnet, SLOTS__CPU="2")
    proc.wait_for(event_is("registered"))
    running = [devnet.submit({"type": "sleep", "seconds": 1.5}) for _ in range(2)]
    proc.wait_for(event_is("job_started"), count=2)
    waiting = [devnet.submit({"type": "noop"}) for _ in range(2)]

    # When it gets one termination signal
    mark = proc.mark()
    proc.send(sig)

    # Then it exits 0 once the running jobs are done and delivered
    assert proc.wait_exit() == 0, proc.tail()
    after = proc.lines()[mark:]
    delivered = {ln["job_id"] for ln in after if event_is("outcome_delivered")(ln)}
    assert delivered == set(running), proc.tail()
    # and it claimed nothing new after the signal
    assert not [ln for ln in after if event_is("job_claimed")(ln)], proc.tail()
    for job_id in running:
        assert devnet.job(job_id)["state"] == "COMPLETED"
        assert len(devnet.receipts(job_id)) == 1
    for job_id in waiting:
        view = devnet.job(job_id)
        assert view["state"] == "QUEUED" and view["assigned_miner_id"] is None, view
    # and its last word to the coordinator was an OFFLINE heartbeat with nothing in flight
    me = devnet.admin_state()["miners"][identity(devnet)]
    assert me["status"] == "OFFLINE", me
    assert me["inflight"] == 0, me
    assert "Traceback" not in proc.text()


@pytest.mark.parametrize(
    ("sig", "dialect"),
    [(signal.SIGTERM, "2026-01"), (signal.SIGINT, "2026-08")],
    ids=["SIGTERM-2026-01", "SIGINT-2026-08"],
)
def test_a_second_termination_signal_cancels_running_jobs_then_exits_zero(
    start_devnet, miner: MinerLauncher, sig: signal.Signals, dialect: str
) -> None:
    # Given a headless miner running two jobs that would take a minute
    devnet = start_devnet(dialect)
    proc = miner.start(devnet, SLOTS__CPU="2")
    proc.wait_for(event_is("registered"))
    jobs = [devnet.submit({"type": "sleep", "seconds": 60}) for _ in range(2)]
    proc.wait_for(event_is("job_started"), count=2)

    # When it gets a termination signal, starts draining, and gets a second one
    mark = proc.mark()
    proc.send(sig)
    proc.wait_for(message_has("termination signal: draining"), after=mark)
    proc.send(sig)

    # Then it cancels both jobs, reports them, and exits 0 well before they would end
    assert proc.wait_exit(timeout=15) == 0, proc.tail()
    canceled = [ln for ln in proc.lines()[mark:]
                if event_is("job_finished", outcome="canceled")(ln)]
    assert {ln["job_id"] for ln in canceled} == set(jobs)
    for job_id in jobs:
        view = devnet.job(job_id)
        assert view["state"] == "FAILED", view
        if dialect == "2026-01":  # the client sees "<code>: <message>"
            assert view["error"].startswith("E_CANCELED: "), view
        else:  # the client sees the message only
            assert "canceled" in view["error"], view
        assert devnet.receipts(job_id) == []
    with miner.journal() as db:
        codes = dict(db.execute("SELECT job_id, error_code FROM jobs").fetchall())
    assert codes == {job_id: "E_CANCELED" for job_id in jobs}
    assert devnet.admin_state()["miners"][identity(devnet)]["status"] == "OFFLINE"


def test_the_drain_grace_bounds_how_long_a_signal_waits_for_running_jobs(
    start_devnet, miner: MinerLauncher
) -> None:
    # Given a miner whose drain grace is half a second, running a one-minute job
    devnet = start_devnet("2026-01")
    proc = miner.start(devnet, SLOTS__CPU="1", JOBS__DRAIN_GRACE_S="0.5")
    proc.wait_for(event_is("registered"))
    job_id = devnet.submit({"type": "sleep", "seconds": 60})
    proc.wait_for(event_is("job_started", job_id=job_id))

    # When it gets a single SIGTERM
    proc.send(signal.SIGTERM)

    # Then the job is canceled once the grace is over and the miner exits 0
    assert proc.wait_exit(timeout=15) == 0, proc.tail()
    view = devnet.job(job_id)
    assert view["state"] == "FAILED" and view["error"].startswith("E_CANCELED: "), view
