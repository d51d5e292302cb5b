"""Fuzzed coordinator answers: the miner never crashes, never restarts its session in a
loop, and never puts a job id that is not one into a URL or a path.

The reference coordinator's fault injection replaces real answers with seeded hostile
ones (wrong shapes and types, lone surrogates, NULs, control characters, deep nesting,
huge bodies; job ids with newlines, '/', '..', '?', '#', unicode, ...), in three phases:
session answers (register, heartbeat), poll answers, then outcome answers (result, fail,
and on 2026-08 the earnings lookup). A last phase without faults shows the miner still
works, and registers no more.
"""

from __future__ import annotations

import functools
import json
import random
import re
from typing import Any

import pytest

from aitbc_miner.backoff import Backoff
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine import outbox, poller, session
from aitbc_miner.engine.snapshot import Mode
from aitbc_miner.protocol import is_job_id
from aitbc_miner.untrusted import MAX_ANSWER_BYTES

from .fuzz import BAD_IDS, answer_body, poll_answer

SEED = 8080
SESSION_ANSWERS = 60
POLL_ANSWERS = 1000
OUTCOME_JOBS = 150  # of each kind (result, fail); each gets about one fuzzed answer
MINER_PATH = re.compile(r"^(?:POST|DELETE|GET) /v1/miners/([^/]*)(?:/([^/?]*))?")
FIXED_SEGMENTS = {"register", "heartbeat", "poll"}
# Content types a garbled answer comes with (charset parameters are aiohttp's to add).
CONTENT_TYPES = ["application/json", "text/html", "text/plain", "application/octet-stream"]


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry (and every woken heartbeat) waits milliseconds: the policy is the same,
    a streak of hundreds of hostile answers just takes less time."""
    quick = functools.partial(Backoff, base_s=0.001, cap_s=0.005, retry_after_cap_s=0.005)
    for module in (poller, session, outbox):
        monkeypatch.setattr(module, "Backoff", quick)
    monkeypatch.setattr(session, "MIN_HEARTBEAT_GAP_S", 0.01)


def _arm(devnet: Devnet, endpoint: str, rng: random.Random, body: str, *,
         statuses: list[int], act: bool = False) -> None:
    status = rng.choice(statuses)
    devnet.inject(endpoint, "status", status=status, body=body, act=act,
                  content_type=rng.choice(CONTENT_TYPES),
                  retry_after=rng.choice([None, 0, 0.001]) if status == 429 else None)


def _unsafe_urls(devnet: Devnet) -> list[str]:
    """Request lines whose job-id segment is not a job id (should be none)."""
    unsafe = []
    for line in devnet.request_log:
        match = MINER_PATH.match(line)
        if match is None:
            continue
        segment = match.group(1)
        if segment not in FIXED_SEGMENTS and segment != "rig-test" and not is_job_id(segment):
            unsafe.append(line)
    return unsafe


async def test_fuzzed_answers_never_crash_loop_or_leak_a_bad_id(
    devnet: Devnet, make_engine, run_engine, eventually, read_journal, fast_backoff, tmp_path
) -> None:
    rng = random.Random(SEED)
    engine = make_engine(devnet.url, cpu=4, heartbeat_interval_s=0.05, poll_min_s=0.001,
                         poll_max_s=0.01)
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=10)

    # Given hostile answers to the session's calls (heartbeat 404s make it register again)
    for _ in range(SESSION_ANSWERS):
        endpoint = rng.choice(["register", "heartbeat"])
        statuses = [200, 200, 400, 422, 500, 502, 503] + ([404] if endpoint == "heartbeat" else [])
        _arm(devnet, endpoint, rng, answer_body(rng), statuses=statuses)
    # When the miner lives through them
    await eventually(lambda: devnet.faults.list() == [], timeout=30, what="session faults used")
    await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None
                            and s.connection.link.value == "registered", timeout=10)
    assert not running.task.done(), running.task

    # Given hostile poll answers: bad ids, hostile payloads under fine ids, wrong shapes,
    # garbage, and one answer longer than the miner reads
    named: list[Any] = []
    for _ in range(POLL_ANSWERS):
        body, job_id = poll_answer(rng)
        named.append(job_id)
        _arm(devnet, "poll", rng, body, statuses=[200] * 8 + [204, 404, 422, 429, 502, 503])
    devnet.inject("poll", "status", status=200, body='{"job_id": "' + "x" * MAX_ANSWER_BYTES
                  + '"}')
    # When the miner polls through them
    await eventually(lambda: devnet.faults.list() == [], timeout=60, what="poll faults used")
    await engine.wait_until(lambda s: not s.jobs and s.outbox == 0, timeout=30)
    assert not running.task.done(), running.task

    # Given real jobs whose outcomes get hostile answers (and, on 2026-08, lookups too)
    done_before = engine.snapshot().counters
    for i in range(OUTCOME_JOBS):
        await devnet.submit_job({"type": "noop", "i": i})
        await devnet.submit_job({"type": "transcribe", "url": "u"})
    for endpoint in ("result", "fail"):
        for _ in range(OUTCOME_JOBS * 2 // 3):
            _arm(devnet, endpoint, rng, answer_body(rng), act=rng.random() < 0.5,
                 statuses=[200] * 6 + [400, 404, 422, 500, 502, 503])
    if devnet.dialect is Dialect.V2026_08:
        for _ in range(3):
            _arm(devnet, "earnings", rng, answer_body(rng), statuses=[200, 500])
    # When the miner delivers them all
    await engine.wait_until(
        lambda s: s.counters.delivered + s.counters.rejected
        >= done_before.delivered + done_before.rejected + 2 * OUTCOME_JOBS
        or s.mode is Mode.STOPPED, timeout=60)
    assert not running.task.done(), running.task
    devnet.faults.clear()  # an earnings fault may wait for a lookup that never came

    # Then, with the faults gone, the miner still takes and completes work, without
    # registering again (no restart loop)
    registrations = devnet.requests["register"]
    clean = [(await devnet.submit_job({"type": "sha256", "data": str(i)}))["job_id"]
             for i in range(10)]
    await eventually(lambda: all(devnet.jobs[j]["state"] == "COMPLETED" for j in clean),
                     timeout=20, what="clean jobs completed")
    assert devnet.requests["register"] == registrations
    assert not running.task.done() and engine.snapshot().mode is Mode.RUNNING

    # ...no request ever named a job by an id that is not one
    assert _unsafe_urls(devnet) == []
    log = "\n".join(devnet.request_log)
    for bad in BAD_IDS:
        if isinstance(bad, str) and len(bad) >= 3:
            assert f"/miners/{bad}" not in log, bad
    # ...and neither the journal nor the workspace holds one
    await running.stop()
    records, receipts = await read_journal(engine)
    assert all(is_job_id(job_id) for job_id in records)
    bad_named = [n for n in named if n is not None and not is_job_id(n)]
    assert bad_named and not set(map(json.dumps, bad_named)) & set(map(json.dumps, records))
    folders = [p.name for p in (tmp_path / "miner" / "jobs").iterdir()]
    assert folders and all(is_job_id(name) and name in records for name in folders)
    # ...while the hostile receipts some answers carried were kept, and not counted
    hostile = [r for r in receipts if r.verdict != "valid_unpinned"]
    assert hostile and not any(r.counted for r in hostile)
