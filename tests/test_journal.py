"""The journal on real SQLite: job state transitions, recovery after a crash, receipts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.journal import (
    ACTIVE_STATES,
    FINAL_STATES,
    OUTBOX_STATES,
    JobState,
    Journal,
    Outcome,
)

PAYLOAD = {"type": "sleep", "seconds": 1}
RESULT_BODY = {"result": {"status": "completed"}, "metrics": {"duration_ms": 1000}}


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "state" / "journal.sqlite3")
    yield j
    await j.close()


async def _staged(journal: Journal, job_id: str) -> None:
    assert await journal.claim(job_id, PAYLOAD, {})
    await journal.mark_running(job_id, "cpu:0")
    await journal.stage(job_id, Outcome.COMPLETED, "result", RESULT_BODY)


def test_the_state_sets_partition_the_job_states() -> None:
    # Given the named state sets, Then every state is in exactly one of them
    sets = (ACTIVE_STATES, OUTBOX_STATES, FINAL_STATES)
    assert set().union(*sets) == set(JobState)
    assert sum(len(s) for s in sets) == len(JobState)


async def test_a_job_moves_claimed_running_staged_uncertain_delivered(journal: Journal) -> None:
    # Given a claimed job
    assert await journal.claim("j1", PAYLOAD, {"gpu": None})
    record = await journal.get("j1")
    assert record is not None and record.state is JobState.CLAIMED and record.job_type == "sleep"
    # When it runs, is staged, sent (uncertain) and answered
    await journal.mark_running("j1", "cpu:0")
    await journal.stage("j1", Outcome.COMPLETED, "result", RESULT_BODY)
    staged = await journal.get("j1")
    await journal.mark_uncertain("j1", "sending /result")
    await journal.mark_delivered("j1")
    # Then every step is recorded in order and the final record carries the outcome
    assert [s for s, _ in await journal.transitions("j1")] == [
        "claimed", "running", "staged", "uncertain", "delivered"]
    assert staged is not None and staged.state is JobState.STAGED and staged.body == RESULT_BODY
    record = await journal.get("j1")
    assert record is not None
    assert record.state is JobState.DELIVERED and record.outcome is Outcome.COMPLETED
    assert record.slot == "cpu:0" and record.endpoint == "result" and record.attempts == 1
    assert record.started_at and record.finished_at and record.delivered_at
    assert await journal.outbox() == []


async def test_a_job_is_claimed_only_once(journal: Journal) -> None:
    # Given a claimed job, When the coordinator hands it to us again
    assert await journal.claim("j1", PAYLOAD, {})
    # Then the second claim is refused and nothing changes
    assert not await journal.claim("j1", {"type": "noop"}, {})
    record = await journal.get("j1")
    assert record is not None and record.payload == PAYLOAD
    assert [s for s, _ in await journal.transitions("j1")] == ["claimed"]


async def test_the_outbox_holds_staged_and_uncertain_jobs_oldest_first(journal: Journal) -> None:
    # Given jobs staged in order a, b, c, d, then sent or refused in various ways
    for job_id in "abcd":
        await _staged(journal, job_id)
    await journal.mark_uncertain("b", "sending /result")  # in doubt: stays in the outbox
    await journal.mark_uncertain("c", "sending /result")
    await journal.mark_delivered("c")
    await journal.mark_rejected("d", "404 job not found")
    # When the outbox is read
    pending = await journal.outbox()
    # Then staged and uncertain jobs are pending, oldest first; delivered and rejected are not
    assert [(r.job_id, r.state) for r in pending] == [("a", JobState.STAGED),
                                                      ("b", JobState.UNCERTAIN)]
    rejected = await journal.get("d")
    assert rejected is not None and rejected.state is JobState.REJECTED
    assert rejected.last_error == "404 job not found"


async def test_an_uncertain_job_can_be_staged_again_for_a_resend(journal: Journal) -> None:
    # Given a delivery in doubt
    await _staged(journal, "j1")
    await journal.mark_uncertain("j1", "sending /result")
    # When the policy decides to resend
    await journal.mark_staged_again("j1", "policy: resend")
    # Then it is staged again and the reason is kept for the operator
    record = await journal.get("j1")
    assert record is not None and record.state is JobState.STAGED
    assert ("staged", "policy: resend") in await journal.transitions("j1")


async def test_recover_stages_interrupted_failures_and_never_reruns(tmp_path: Path) -> None:
    # Given a journal left by a miner that died with one job claimed, one running,
    # one staged and one delivered
    path = tmp_path / "journal.sqlite3"
    first = await Journal.open(path)
    await first.claim("claimed", PAYLOAD, {})
    await first.claim("running", PAYLOAD, {})
    await first.mark_running("running", "cpu:1")
    await _staged(first, "staged")
    await _staged(first, "delivered")
    await first.mark_delivered("delivered")
    await first.close()
    # When the next run opens it and recovers
    journal = await Journal.open(path)
    try:
        interrupted = await journal.recover()
        # Then the claimed and running jobs become staged E_INTERRUPTED failures (to /fail)
        assert sorted(interrupted) == ["claimed", "running"]
        for job_id, says in (("claimed", "not run"), ("running", "not re-run")):
            record = await journal.get(job_id)
            assert record is not None and record.state is JobState.STAGED
            assert record.outcome is Outcome.INTERRUPTED and record.endpoint == "fail"
            assert record.error_code == ErrorCode.E_INTERRUPTED.value
            assert record.body is not None
            assert record.body["error_code"] == "E_INTERRUPTED"
            assert record.body["error_message"].endswith(says)
        # ...nothing is left claimed or running, so nothing will be run again
        assert await journal.jobs("state IN ('claimed', 'running')") == []
        # ...the staged and delivered jobs are untouched
        staged, delivered = await journal.get("staged"), await journal.get("delivered")
        assert staged is not None and staged.outcome is Outcome.COMPLETED
        assert delivered is not None and delivered.state is JobState.DELIVERED
        # ...all undelivered outcomes are in the outbox, and a second recover finds nothing
        assert sorted(r.job_id for r in await journal.outbox()) == ["claimed", "running", "staged"]
        assert await journal.recover() == []
        counts = await journal.counts()
        assert counts["staged"] == 3 and counts["delivered"] == 1
        assert counts["outcome:interrupted"] == 2 and counts["outcome:completed"] == 2
    finally:
        await journal.close()


async def test_an_uncertain_delivery_survives_a_restart_still_uncertain(tmp_path: Path) -> None:
    # Given a miner that died while a /result was on the wire
    path = tmp_path / "journal.sqlite3"
    first = await Journal.open(path)
    await _staged(first, "j1")
    await first.mark_uncertain("j1", "sending /result")
    await first.close()
    # When the next run recovers
    journal = await Journal.open(path)
    try:
        assert await journal.recover() == []
        # Then the job is still in doubt (to be resolved on purpose), not blindly staged
        [record] = await journal.outbox()
        assert record.job_id == "j1" and record.state is JobState.UNCERTAIN
    finally:
        await journal.close()


def _receipt(receipt_id: str, job_id: str = "j1", price: float = 0.02) -> dict[str, object]:
    return {"receipt_id": receipt_id, "job_id": job_id, "units": 1.0, "unit_type": "gpu_seconds",
            "price": price}


async def test_a_second_receipt_for_a_job_is_kept_but_flagged_and_not_counted(
    journal: Journal,
) -> None:
    # Given a job with one stored, counted receipt
    await _staged(journal, "j1")
    first = await journal.store_receipt("j1", _receipt("r1"), verdict="valid_pinned", reason="",
                                        key_id="k", counted=True)
    assert first.counted and not first.duplicate
    # When a second receipt for the same job arrives (a resent /result)
    second = await journal.store_receipt("j1", _receipt("r2"), verdict="valid_pinned", reason="",
                                         key_id="k", counted=True)
    # Then it is stored, flagged as a duplicate and not counted; the first stays counted
    assert second.duplicate and not second.counted
    stored = {r.receipt_id: r for r in await journal.receipts("j1")}
    assert set(stored) == {"r1", "r2"}
    assert stored["r1"].counted and not stored["r1"].duplicate
    assert not stored["r2"].counted and stored["r2"].duplicate
    assert sum(r.counted for r in stored.values()) == 1


async def test_storing_the_same_receipt_twice_is_not_a_duplicate(journal: Journal) -> None:
    # Given a stored receipt, When the same receipt (same id) is stored again
    first = await journal.store_receipt("j1", _receipt("r1"), verdict="valid_pinned",
                                        reason="", key_id="k", counted=True)
    assert first.replaced_counted is None
    again = await journal.store_receipt("j1", _receipt("r1"), verdict="valid_pinned", reason="",
                                        key_id="k", counted=True)
    # Then there is still one receipt, counted, and the caller is told it replaced a counted row
    assert again.counted and not again.duplicate and again.replaced_counted is True
    assert [(r.receipt_id, r.counted) for r in await journal.receipts()] == [("r1", True)]


async def test_the_newest_receipts_and_the_counts_are_read_without_the_rest(
    journal: Journal,
) -> None:
    # Given five receipts, two of them not counted
    for n in range(5):
        await journal.store_receipt(f"j{n}", _receipt(f"r{n}"), verdict="valid_pinned",
                                    reason="", key_id="k", counted=n % 2 == 0)
    # Then the newest three come back oldest first, and the counts cover all five
    newest = await journal.receipts(newest=3)
    assert [r.receipt_id for r in newest] == ["r2", "r3", "r4"]
    assert [r.receipt_id for r in await journal.receipts()] == [f"r{n}" for n in range(5)]
    assert await journal.receipt_counts() == (5, 2)


async def test_a_receipt_that_failed_verification_is_kept_but_not_counted(
    journal: Journal,
) -> None:
    # Given a receipt whose signature did not verify, When it is stored
    stored = await journal.store_receipt("j1", _receipt("r1"), verdict="invalid_signature",
                                         reason="signature does not match", key_id="k",
                                         counted=False)
    # Then it is kept as evidence, with its verdict and reason, and not counted
    [record] = await journal.receipts()
    assert not stored.counted and not stored.duplicate
    assert record.verdict == "invalid_signature" and record.reason == "signature does not match"
    assert not record.counted


async def test_attempts_count_sends_not_state_changes(journal: Journal) -> None:
    # Given a staged job that is sent, refused as unavailable, sent again and then refused for good
    await _staged(journal, "j1")
    await journal.mark_uncertain("j1", "sending /result")
    await journal.mark_staged_again("j1", "503 try later")
    await journal.mark_uncertain("j1", "sending /result")
    await journal.mark_rejected("j1", "404 job not found")
    # When the record is read, Then it shows two sends (not one per state change)
    record = await journal.get("j1")
    assert record is not None and record.state is JobState.REJECTED and record.attempts == 2


@pytest.mark.parametrize("yields", range(12))
async def test_a_write_cancelled_at_any_await_leaves_the_journal_usable(
    journal: Journal, yields: int
) -> None:
    # Given a claimed job whose "running" write is under way
    assert await journal.claim("j1", PAYLOAD, {})
    write = asyncio.create_task(journal.mark_running("j1", "cpu:0"))
    # When the writer is cancelled after `yields` turns of the loop (each await in the write:
    # BEGIN, the statements, COMMIT), as an operator's cancel or a shutdown may do
    for _ in range(yields):
        await asyncio.sleep(0)  # one loop turn: lets the write reach its next await
    write.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await write
    # Then the journal is still writable (no transaction left open on its connection)...
    await journal.stage("j1", Outcome.CANCELED, "fail", {"error_code": "E_CANCELED",
                                                          "error_message": "x", "metrics": {}},
                        ErrorCode.E_CANCELED)
    record = await journal.get("j1")
    assert record is not None and record.state is JobState.STAGED
    # ...and the cancelled write happened whole or not at all, never half
    steps = [s for s, _ in await journal.transitions("j1")]
    assert steps in (["claimed", "staged"], ["claimed", "running", "staged"])
    assert (record.slot == "cpu:0") == ("running" in steps)


@pytest.mark.parametrize("yields", range(8))
async def test_closing_right_after_a_cancelled_write_keeps_that_write_whole(
    tmp_path: Path, yields: int
) -> None:
    # Given a write under way that is cancelled (a shutdown cancels the task that wrote)
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    assert await journal.claim("j1", PAYLOAD, {})
    write = asyncio.create_task(journal.mark_running("j1", "cpu:0"))
    for _ in range(yields):
        await asyncio.sleep(0)  # one loop turn: lets the write reach its next await
    write.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await write
    # When the journal is closed at once (the engine's last step)
    await journal.close()
    # Then a write that had begun is on disk whole (close waited for it); one cancelled
    # before it began is not there at all
    reopened = await Journal.open(path)
    try:
        record = await reopened.get("j1")
        steps = [s for s, _ in await reopened.transitions("j1")]
        assert steps == (["claimed", "running"] if yields else ["claimed"])
        assert record is not None and record.state is (
            JobState.RUNNING if yields else JobState.CLAIMED)
    finally:
        await reopened.close()
