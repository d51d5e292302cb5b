"""The smallest end-to-end path: jobs in, outcomes out, against both dialects."""

from __future__ import annotations

from aitbc_miner.devnet import Devnet


async def test_jobs_flow_and_each_gets_one_receipt(devnet: Devnet, make_engine, run_engine) -> None:
    # Given a miner with two CPU slots and a coordinator with five jobs, one unsupported
    ids = [await devnet.submit_job({"type": "sha256", "data": str(i)}) for i in range(4)]
    bad = await devnet.submit_job({"type": "transcribe", "url": "x"})
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    running = run_engine(engine)
    # When every outcome is delivered
    snap = await engine.wait_until(lambda s: s.counters.delivered == 5, timeout=20)
    await running.stop()
    # Then four completed with exactly one pinned, valid receipt each and one was refused
    assert snap.counters.completed == 4 and snap.counters.failed == 1
    receipts = await _receipts(engine)
    assert sorted(r.job_id for r in receipts) == sorted(_ids(ids))
    assert {r.verdict for r in receipts} == {"valid_pinned"}
    failed = devnet.jobs[_ids([bad])[0]]
    assert failed["state"] == "FAILED"
    # The failure text a client sees: "<code>: <message>" on 2026-01, the message on 2026-08
    expected = "job type 'transcribe' is not supported"
    if devnet.dialect.value == "2026-01":
        expected = "E_UNSUPPORTED: " + expected
    assert failed["error"].startswith(expected)


def _ids(jobs: list) -> list[str]:
    return [j if isinstance(j, str) else j["job_id"] for j in jobs]


async def _receipts(engine):
    from aitbc_miner.journal import Journal

    journal = await Journal.open(engine._journal_path)
    try:
        return await journal.receipts()
    finally:
        await journal.close()
