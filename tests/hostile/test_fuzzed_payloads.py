"""5,000 fuzzed payloads through the reference coordinator: the miner never crashes, and
every job ends at the coordinator completed or failed with a stable code.

Payloads (seeded, so every run is the same): wrong types, lone surrogates and NULs in
keys and values, control characters, nesting within and past the bound, strings up to
past the size bound, unknown types. Each case says what it must end as, and it does.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter

import aiohttp
import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.snapshot import Mode

from .fuzz import COMPLETED, Case, payload_case

PAYLOADS = 5000
HUGE = 6  # of them, strings around and past the size bounds (MiBs each)
SEED = 20260808
CODES = {code.value for code in ErrorCode}

# The code of a failure is visible at the coordinator on 2026-01 ("<code>: <message>").
ON_2026_01 = pytest.mark.parametrize("dialect", [Dialect.V2026_01], ids=["2026-01"])


async def _submit(devnet: Devnet, cases: list[Case], batch: int = 50) -> list[str]:
    """POST /v1/jobs for each case, as a client would (aiohttp: the fastest client here).
    The body is ASCII JSON, so lone surrogates travel as escapes."""
    async with aiohttp.ClientSession(headers=devnet.client_headers()) as http:
        async def submit(case: Case) -> str:
            body = json.dumps({"payload": case.payload}, ensure_ascii=True).encode()
            async with http.post(f"{devnet.api_url}/jobs", data=io.BytesIO(body),
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 201, (case.kind, await response.text())
                return str((await response.json())["job_id"])

        ids: list[str] = []
        for start in range(0, len(cases), batch):
            ids += await asyncio.gather(*(submit(c) for c in cases[start:start + batch]))
    return ids


def _ended_as(job: dict) -> str:
    """COMPLETED, or the error code a FAILED job was reported with."""
    if job["state"] == "COMPLETED":
        return COMPLETED
    assert job["state"] == "FAILED", job
    code = (job["error"] or "").split(":", 1)[0]
    assert code in CODES, job["error"]
    return code


@ON_2026_01
@pytest.mark.slow
@pytest.mark.timeout(420)  # about a minute alone; a loaded 2-core machine may need several
async def test_five_thousand_fuzzed_payloads_each_end_with_a_code_and_none_crashes(
    devnet: Devnet, make_engine, run_engine, read_journal
) -> None:
    # Given the reference coordinator holding 5,000 fuzzed jobs
    rng = random.Random(SEED)
    cases = [payload_case(rng) for _ in range(PAYLOADS - HUGE)]
    cases += [payload_case(rng, huge=True) for _ in range(HUGE)]
    rng.shuffle(cases)
    ids = await _submit(devnet, cases)
    assert len(set(ids)) == PAYLOADS
    # When a miner works through them
    engine = make_engine(devnet.url, cpu=8, poll_min_s=0.001, poll_max_s=0.01)
    running = run_engine(engine)
    snap = await engine.wait_until(
        lambda s: s.counters.delivered >= PAYLOADS or s.mode is Mode.STOPPED, timeout=360)
    # Then it is still running, having claimed and delivered each job once
    assert not running.task.done(), running.task
    assert snap.counters.claimed == PAYLOADS and snap.counters.delivered == PAYLOADS
    assert snap.counters.rejected == 0
    # ...and at the coordinator every job ended as its case says: completed, or failed
    # with the stable code it deserves (none left RUNNING, none failed E_INTERNAL)
    jobs = devnet.jobs
    ended = {job_id: _ended_as(jobs[job_id]) for job_id in ids}
    wrong = [(c.kind, ended[i], sorted(c.expect), jobs[i]["error"])
             for i, c in zip(ids, cases, strict=True) if ended[i] not in c.expect]
    assert not wrong, wrong[:10]
    assert {job["state"] for job in jobs.values()} <= {"COMPLETED", "FAILED"}
    # ...the journal agrees, job by job
    records, _ = await read_journal(engine)
    assert set(records) == set(ids)
    for job_id, record in records.items():
        assert record.state.value == "delivered"
        assert (record.error_code or COMPLETED) == ended[job_id]
    # ...and the fuzz covered every kind of case
    kinds = Counter(c.kind for c in cases)
    assert len(kinds) >= 17 and min(kinds.values()) >= 1, kinds
    print(f"{PAYLOADS} fuzzed payloads: {dict(Counter(ended.values()))}")
