"""Many jobs through a few slots: each completes once, is delivered once, earns one receipt."""

from __future__ import annotations

import time

from aitbc_miner.devnet import Devnet

JOBS = 500
SLOTS = 4


async def test_five_hundred_jobs_through_four_slots_each_complete_once_with_one_receipt(
    devnet: Devnet, make_engine, run_engine, read_journal, miner_at, eventually
) -> None:
    # Given 500 queued sha256 jobs and a miner with 4 CPU slots that pins the devnet's key
    ids = {(await devnet.submit_job({"type": "sha256", "data": f"job-{i}"}))["job_id"]
           for i in range(JOBS)}
    engine = make_engine(devnet.url, cpu=SLOTS, pinned_key=devnet.public_key_id,
                         heartbeat_interval_s=1.0)
    events = engine.subscribe(maxlen=10 * JOBS)
    started = time.perf_counter()
    run_engine(engine)

    # When every outcome has been delivered
    snap = await engine.wait_until(lambda s: s.counters.delivered >= JOBS, timeout=60)
    elapsed = time.perf_counter() - started
    delivered_at = snap.at

    # Then the engine completed and delivered each job exactly once, and never ran more than 4
    assert snap.counters.completed == JOBS and snap.counters.failed == 0, snap.counters
    assert snap.counters.delivered == JOBS and snap.counters.rejected == 0, snap.counters
    assert snap.counters.receipts == JOBS and snap.counters.receipts_flagged == 0, snap.counters
    claimed = [e.job_id for e in events.drain() if e.name == "job_claimed"]
    assert sorted(claimed) == sorted(ids), "each job is claimed once, and only these"
    # ...the coordinator saw one /result and made one receipt per job, all COMPLETED
    jobs = devnet.jobs
    assert {jobs[j]["state"] for j in ids} == {"COMPLETED"}
    assert {jobs[j]["receipts"] for j in ids} == {1}
    assert {jobs[j]["result_calls"] for j in ids} == {1}
    assert sum(1 for j in ids if jobs[j]["fail_calls"]) == 0
    # ...the journal holds 500 delivered jobs and 500 counted, pinned receipts, none flagged
    records, receipts = await read_journal(engine)
    assert {r.state.value for r in records.values()} == {"delivered"} and set(records) == ids
    assert sorted(r.job_id for r in receipts) == sorted(ids)
    assert all(r.counted and not r.duplicate for r in receipts)
    assert {r.verdict for r in receipts} == {"valid_pinned"}
    # ...and once the next heartbeat has told the truth, the coordinator counts nothing in flight
    await engine.wait_until(lambda s: (s.connection.last_heartbeat_at or 0) > delivered_at,
                            timeout=5)
    await eventually(lambda: miner_at(devnet)["inflight"] == 0, timeout=3,
                     what="coordinator inflight back to 0")
    print(f"{JOBS} jobs on {devnet.dialect}: {elapsed:.1f}s")
