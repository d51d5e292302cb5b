"""The data disk: a write that fails fails its job (E_DISK or E_INTERNAL), never the engine;
below the free-space floor the miner stops claiming, says why, and resumes by itself.

The full-disk tests mount a real 2 MiB tmpfs as the jobs folder (root only; CI runs them
as root). The others inject the error where the miner writes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner import workspace
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.codec import to_jsonable
from aitbc_miner.engine.disk import MB, check_disk
from aitbc_miner.engine.snapshot import SlotState, Snapshot
from aitbc_miner.host.ctl import _status
from aitbc_miner.journal import JobState, Journal

SHA = {"type": "sha256", "data": "x"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted where ``make_engine`` puts the jobs folder of miner "miner"."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; CI runs the disk tests as root")
    jobs = tmp_path / "miner" / "jobs"
    jobs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                              str(jobs)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield jobs
    finally:
        if subprocess.run(["umount", str(jobs)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(jobs)], check=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file until only ``leave`` bytes are free (0: until ENOSPC)."""
    filler = folder / "filler"
    want = workspace.free_bytes(folder) - leave if leave else None
    chunk = b"\0" * 65536
    with filler.open("ab", buffering=0) as f:
        try:
            while want is None or want > 0:
                written = f.write(chunk if want is None else chunk[:want])
                if want is not None:
                    want -= written or 0
        except OSError as exc:
            if exc.errno != errno.ENOSPC or want is not None:
                raise
    return filler


async def _submit(devnet: Devnet, payload: dict[str, Any], n: int = 1) -> list[str]:
    return [(await devnet.submit_job(payload))["job_id"] for _ in range(n)]


def _failure_text(devnet: Devnet, code: str, message: str) -> str:
    """The start of what a client reads for a job the miner failed."""
    return f"{code}: {message}" if devnet.dialect is Dialect.V2026_01 else message


def _poll_activity(snap: Snapshot) -> str | None:
    return next((loop.activity for loop in snap.loops if loop.name == "poll"), None)


async def test_a_full_data_disk_fails_each_job_with_E_DISK_and_the_miner_runs_on(
        devnet: Devnet, make_engine, run_engine, read_journal, small_disk: Path) -> None:
    # Given a miner without a floor whose data disk is full
    filler = fill(small_disk)
    engine = make_engine(devnet.url)
    running = run_engine(engine)
    # When three jobs arrive
    failing = await _submit(devnet, SHA, 3)
    snap = await engine.wait_until(lambda s: s.counters.delivered == 3, timeout=20)
    # Then each is failed with E_DISK, seen as such at the coordinator, and the miner runs on
    assert snap.counters.failed == 3 and not running.task.done()
    records, _ = await read_journal(engine)
    for job_id in failing:
        assert records[job_id].error_code == "E_DISK"
        assert devnet.jobs[job_id]["state"] == "FAILED"
        assert devnet.jobs[job_id]["error"].startswith(
            _failure_text(devnet, "E_DISK", "cannot write job.json: ENOSPC"))
    assert not list(small_disk.glob("*/job.json"))  # no half-written file holds on to space
    # When space is freed, new jobs complete on the same, still running engine
    filler.unlink()
    done = await _submit(devnet, SHA, 2)
    snap = await engine.wait_until(lambda s: s.counters.delivered == 5, timeout=20)
    assert snap.counters.completed == 2 and not running.task.done()
    assert {devnet.jobs[j]["state"] for j in done} == {"COMPLETED"}


async def test_below_the_floor_the_miner_stops_claiming_says_why_and_resumes_when_space_returns(
        devnet: Devnet, make_engine, run_engine, small_disk: Path) -> None:
    # Given a miner with a 1 MB floor on a 2 MiB data disk, working normally
    engine = make_engine(devnet.url, min_free_mb=1.0, disk_check_s=0.05)
    events = engine.subscribe()
    running = run_engine(engine)
    await _submit(devnet, SHA)
    await engine.wait_until(lambda s: s.counters.completed == 1 and s.counters.delivered == 1)
    # When the disk fills to half a MB free
    filler = fill(small_disk, leave=MB // 2)
    # Then claiming stops, and the snapshot and the poll loop say why
    snap = await engine.wait_until(
        lambda s: s.disk.low and _poll_activity(s) == s.disk.reason and not s.polls_in_flight,
        timeout=10)
    assert snap.disk.reason is not None and "not claiming" in snap.disk.reason
    assert snap.disk.free_mb == 0.5 and snap.disk.floor_mb == 1.0
    assert {slot.state for slot in snap.slots} == {SlotState.PAUSED}
    polls = devnet.requests["poll"]
    waiting = await _submit(devnet, SHA)
    # ...and stays stopped while space is still short (measured again: 0.6 MB free)
    os.truncate(filler, filler.stat().st_size - MB // 8)
    snap = await engine.wait_until(lambda s: s.disk.free_mb == 0.6, timeout=10)
    assert snap.disk.low and devnet.requests["poll"] == polls
    assert devnet.jobs[waiting[0]]["state"] == "QUEUED"
    # When space returns
    filler.unlink()
    # Then claiming resumes by itself and the waiting job completes
    snap = await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=20)
    assert not snap.disk.low and snap.disk.reason is None and not running.task.done()
    assert devnet.jobs[waiting[0]]["state"] == "COMPLETED"
    # ...with one event when it stopped and one when it resumed
    turns = [e for e in events.drain() if e.name == "disk_floor"]
    assert [(e.low, e.severity()) for e in turns] == [(True, "WARNING"), (False, "INFO")]


@pytest.mark.parametrize(("step", "err", "code", "file"), [
    ("prepare", errno.EACCES, "E_INTERNAL", "job.json"),
    ("write_outcome", errno.EMFILE, "E_INTERNAL", "result.json"),
    ("write_outcome", errno.EDQUOT, "E_DISK", "result.json"),
], ids=["EACCES-job.json", "EMFILE-result.json", "EDQUOT-result.json"])
async def test_a_write_error_fails_that_job_and_never_the_engine(
        step: str, err: int, code: str, file: str, devnet: Devnet, make_engine, run_engine,
        read_journal, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a miner whose job-folder writes fail with one errno
    real = getattr(workspace, step)
    broken = [True]

    def write(*args: Any) -> Any:
        if broken[0]:
            raise OSError(err, os.strerror(err))
        return real(*args)

    monkeypatch.setattr(workspace, step, write)
    engine = make_engine(devnet.url)
    running = run_engine(engine)
    # When a job runs
    [job_id] = await _submit(devnet, SHA)
    snap = await engine.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
    # Then it fails with the errno's code, named in the message, and is delivered
    assert snap.counters.failed == 1 and snap.counters.completed == 0
    records, _ = await read_journal(engine)
    assert records[job_id].error_code == code and records[job_id].state is JobState.DELIVERED
    assert devnet.jobs[job_id]["error"].startswith(
        _failure_text(devnet, code, f"cannot write {file}: {errno.errorcode[err]}"))
    # When the writes work again, the same engine completes the next job
    broken[0] = False
    [later] = await _submit(devnet, SHA)
    snap = await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=20)
    assert devnet.jobs[later]["state"] == "COMPLETED" and not running.task.done()


async def test_an_outcome_the_journal_refuses_is_not_lost_the_next_start_reports_it(
        devnet: Devnet, make_engine, run_engine, read_journal,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a journal whose disk refuses every outcome
    real, refusing = Journal.stage, [True]

    async def stage(self: Journal, *args: Any) -> None:
        if refusing[0]:
            raise sqlite3.OperationalError("database or disk is full")
        await real(self, *args)

    monkeypatch.setattr(Journal, "stage", stage)
    engine = make_engine(devnet.url)
    events = engine.subscribe()
    running = run_engine(engine)
    # When a job finishes
    [job_id] = await _submit(devnet, SHA)
    async with asyncio.timeout(20):
        unstaged = await anext(e async for e in events if e.name == "outcome_unstaged")
    # Then the miner says so, keeps running, and the journal still holds the job as running
    assert unstaged.job_id == job_id and "disk is full" in unstaged.error
    assert unstaged.severity() == "ERROR"
    await engine.wait_until(lambda s: not s.jobs, timeout=10)
    assert not running.task.done()
    records, _ = await read_journal(engine)
    assert records[job_id].state is JobState.RUNNING
    await running.stop()
    # When the miner starts again with a working journal
    refusing[0] = False
    again = make_engine(devnet.url)
    run_engine(again)
    await again.wait_until(lambda s: s.counters.delivered == 1, timeout=20)
    # Then the job is reported, as one the miner was running when it stopped
    assert devnet.jobs[job_id]["state"] == "FAILED"
    assert devnet.jobs[job_id]["error"].startswith(
        _failure_text(devnet, "E_INTERRUPTED", "the miner stopped while this job was running"))


async def test_the_floor_turns_once_each_way_with_a_margin_and_survives_a_failed_measure(
        make_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an engine with a 100 MB floor and a disk whose free space we set
    engine = make_engine("http://127.0.0.1:9", min_free_mb=100.0)
    events = engine.subscribe()
    free = [200.0]
    monkeypatch.setattr(workspace, "free_bytes", lambda _root: int(free[0] * MB))
    # When free space falls under the floor and climbs back over it
    low = []
    for mb in (200.0, 50.0, 40.0, 105.0, 120.0, 130.0, 95.0):
        free[0] = mb
        await check_disk(engine.core)
        low.append(engine.core.disk.low)
    # Then it is low from under 100 MB until over 110 MB (no flapping at the floor)...
    assert low == [False, True, True, True, False, False, True]
    # ...with one event per turn
    assert [e.low for e in events.drain() if e.name == "disk_floor"] == [True, False, True]
    # ...and ctl status says why nothing is claimed
    assert "NOT CLAIMING: data disk low: 95 MB free" in _status(to_jsonable(engine.snapshot()))

    # When a measurement fails, the last verdict stands and the error is shown
    def broken(_root: Path) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(workspace, "free_bytes", broken)
    await check_disk(engine.core)
    snap = engine.snapshot()
    assert snap.disk.low and not events.drain()
    assert any(loop.name == "disk" and "Input/output error" in (loop.last_error or "")
               for loop in snap.loops)
