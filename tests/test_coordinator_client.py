"""The coordinator client against the devnet: every answer the spec lists maps to one class.

``SPEC_ANSWERS`` is the "Miner endpoints" table of docs/protocol.md (success and other
answers per call). ``ROWS`` says what the client makes of each; a test fails when an
answer has no row, and when this table drifts from the document.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitbc_miner.coordinator import (
    AuthRefused,
    CoordinatorClient,
    CoordinatorError,
    Invalid,
    NotFound,
    NotRegistered,
    NotSent,
    ProtocolViolation,
    RateLimited,
    Rejected,
    ServerError,
    Unavailable,
    Uncertain,
)
from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.protocol import (
    AssignedJob,
    EarningsResponse,
    HeartbeatRequest,
    RegisterRequest,
    RegisterResponse,
    ResultResponse,
    StatusResponse,
)

MINER_KEY = DEFAULT_MINER_KEYS[0]  # what the devnet fixture accepts
MINER_ID = "rig-client"
PROTOCOL_DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

# docs/protocol.md's "Miner endpoints" table: every status it lists per call.
SPEC_ANSWERS: dict[str, frozenset[int]] = {
    "register": frozenset({200, 401, 422}),
    "heartbeat": frozenset({200, 404}),
    "poll": frozenset({200, 204, 500, 429}),
    "result": frozenset({200, 404}),
    "fail": frozenset({200, 404, 422}),
    "earnings": frozenset({200}),
    "deregister": frozenset({200, 404}),
}
ONLY_2026_08 = frozenset({"earnings", "deregister"})
RESULT_BODY = {"result": {"status": "completed"}, "metrics": {"duration_ms": 5}}
FAIL_BODY = {"error_code": "E_BADJOB", "error_message": "bad", "metrics": {}}


class Ctx:
    """A devnet and clients of it; clients are closed at the end of the test."""

    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet
        self._clients: list[CoordinatorClient] = []

    def client(self, key: str = MINER_KEY, miner_id: str = MINER_ID, url: str | None = None,
               read_timeout_s: float = 5.0) -> CoordinatorClient:
        client = CoordinatorClient(url or self.devnet.url, key, miner_id, connect_timeout_s=1.0,
                                   read_timeout_s=read_timeout_s)
        self._clients.append(client)
        return client

    async def registered(self, **kwargs: Any) -> CoordinatorClient:
        client = self.client(**kwargs)
        await client.register(RegisterRequest(concurrency=4))
        return client

    async def assigned(self, client: CoordinatorClient) -> str:
        """A job the coordinator handed ``client``."""
        await self.devnet.submit_job({"type": "noop"})
        job = await client.poll()
        assert isinstance(job, AssignedJob)
        return job.job_id

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture
async def ctx(devnet: Devnet) -> AsyncIterator[Ctx]:
    c = Ctx(devnet)
    yield c
    await c.aclose()


async def call(ctx: Ctx, client: CoordinatorClient, endpoint: str) -> Any:
    """Make ``endpoint``'s call with a valid body (on a job it holds, where one is needed)."""
    if endpoint == "register":
        return await client.register(RegisterRequest(concurrency=1))
    if endpoint == "heartbeat":
        return await client.heartbeat(HeartbeatRequest(inflight=0))
    if endpoint == "poll":
        return await client.poll()
    if endpoint == "result":
        return await client.result(await ctx.assigned(client), RESULT_BODY)
    if endpoint == "fail":
        return await client.fail(await ctx.assigned(client), FAIL_BODY)
    if endpoint == "earnings":
        return await client.earnings()
    if endpoint == "deregister":
        return await client.deregister()
    raise AssertionError(endpoint)


# --- one row per spec answer -----------------------------------------------------------

Scenario = Callable[[Ctx], Awaitable[Any]]


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    expect: type[BaseException] | Callable[[Any], bool]
    only: Dialect | None = None


ROWS: dict[str, Row] = {}


def row(name: str, expect: type[BaseException] | Callable[[Any], bool],
        only: Dialect | None = None) -> Callable[[Scenario], Scenario]:
    def add(fn: Scenario) -> Scenario:
        ROWS[name] = Row(fn, expect, only)
        return fn
    return add


@row("register 200", lambda r: isinstance(r, RegisterResponse) and r.status == "ok")
async def _register_ok(ctx: Ctx) -> Any:
    return await ctx.client().register(RegisterRequest(concurrency=2))


@row("register 401", AuthRefused)
async def _register_bad_key(ctx: Ctx) -> Any:
    return await ctx.client(key="not-a-miner-key").register(RegisterRequest())


@row("register 422", Invalid)
async def _register_bad_body(ctx: Ctx) -> Any:
    body = {"capabilities": {}, "concurrency": "many"}  # what a broken caller might send
    return await ctx.client().register(body)  # type: ignore[arg-type]


@row("heartbeat 200", lambda r: isinstance(r, StatusResponse) and r.status == "ok")
async def _heartbeat_ok(ctx: Ctx) -> Any:
    return await (await ctx.registered()).heartbeat(HeartbeatRequest(inflight=0))


@row("heartbeat 404", NotRegistered)
async def _heartbeat_unknown(ctx: Ctx) -> Any:
    return await ctx.client(miner_id="never-registered").heartbeat(HeartbeatRequest())


@row("poll 200", lambda r: isinstance(r, AssignedJob) and r.payload == {"type": "noop"})
async def _poll_job(ctx: Ctx) -> Any:
    client = await ctx.registered()
    await ctx.devnet.submit_job({"type": "noop"})
    return await client.poll()


@row("poll 204", lambda r: r is None)
async def _poll_empty(ctx: Ctx) -> Any:
    return await (await ctx.registered()).poll()


@row("poll 500", NotRegistered)
async def _poll_unknown(ctx: Ctx) -> Any:
    return await ctx.client(miner_id="never-registered").poll()


@row("poll 429", lambda e: isinstance(e, RateLimited) and e.retry_after is not None
     and 0 < e.retry_after <= 60)
async def _poll_rate_limited(ctx: Ctx) -> Any:
    async with Devnet(ctx.devnet.dialect, rate_limits={"poll": (1, 60.0)}) as limited:
        client = ctx.client(url=limited.url)
        await client.register(RegisterRequest())
        await client.poll()
        try:
            return await client.poll()
        except RateLimited as exc:
            return exc


@row("result 200", lambda r: isinstance(r, ResultResponse) and r.receipt is not None)
async def _result_ok(ctx: Ctx) -> Any:
    client = await ctx.registered()
    return await client.result(await ctx.assigned(client), RESULT_BODY)


@row("result 404", NotFound)
async def _result_unknown_job(ctx: Ctx) -> Any:
    return await (await ctx.registered()).result("no-such-job", RESULT_BODY)


@row("fail 200", lambda r: isinstance(r, StatusResponse) and r.status == "ok")
async def _fail_ok(ctx: Ctx) -> Any:
    client = await ctx.registered()
    return await client.fail(await ctx.assigned(client), FAIL_BODY)


@row("fail 404", NotFound)
async def _fail_unknown_job(ctx: Ctx) -> Any:
    return await (await ctx.registered()).fail("no-such-job", FAIL_BODY)


@row("fail 422", Invalid)
async def _fail_bad_body(ctx: Ctx) -> Any:
    client = await ctx.registered()
    return await client.fail(await ctx.assigned(client), {"error_code": "E_BADJOB"})


@row("earnings 200", lambda r: isinstance(r, EarningsResponse) and r.completed_jobs == 1
     and len(r.earnings_history) == 1, only=Dialect.V2026_08)
async def _earnings_ok(ctx: Ctx) -> Any:
    client = await ctx.registered()
    await client.result(await ctx.assigned(client), RESULT_BODY)
    return await client.earnings()


@row("earnings 200 with an error key", Invalid, only=Dialect.V2026_08)
async def _earnings_error(ctx: Ctx) -> Any:
    return await ctx.client(miner_id="never-registered").earnings()


@row("earnings on 2026-01 (no such route)", lambda r: r is None, only=Dialect.V2026_01)
async def _earnings_missing(ctx: Ctx) -> Any:
    return await (await ctx.registered()).earnings()


@row("deregister 200", lambda r: r is None, only=Dialect.V2026_08)
async def _deregister_ok(ctx: Ctx) -> Any:
    client = await ctx.registered()
    await client.deregister()
    return None if ctx.devnet.miners[MINER_ID]["status"] == "OFFLINE" else "still online"


@row("deregister 404", lambda r: r is None, only=Dialect.V2026_08)
async def _deregister_unknown(ctx: Ctx) -> Any:
    return await ctx.client(miner_id="never-registered").deregister()


@row("deregister on 2026-01 (no such route)", lambda r: r is None, only=Dialect.V2026_01)
async def _deregister_missing(ctx: Ctx) -> Any:
    return await (await ctx.registered()).deregister()


def test_every_answer_the_spec_lists_has_a_row() -> None:
    # Given the spec's answers per endpoint, Then each has a row saying what the client does
    missing = [f"{e} {s}" for e, statuses in SPEC_ANSWERS.items() for s in sorted(statuses)
               if f"{e} {s}" not in ROWS]
    assert missing == []


def test_the_answer_table_matches_docs_protocol() -> None:
    # Given the protocol document in the repository
    names = {"register": "register", "heartbeat": "heartbeat", "poll": "poll",
             "{job_id}/result": "result", "{job_id}/fail": "fail", "earnings": "earnings",
             "DELETE": "deregister"}
    found: dict[str, frozenset[int]] = {}
    # When its "Miner endpoints" section's table is read (status numbers in the success and
    # other-answers columns; no other table of the document counts)
    section = PROTOCOL_DOC.read_text(encoding="utf-8").split("\n## Miner endpoints\n")[1]
    for line in section.split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or not cells[1].startswith("`") or "/v1/miners" not in cells[1]:
            continue
        name = next(n for key, n in names.items() if key in cells[1])
        found[name] = frozenset(int(s) for s in re.findall(r"\b([1-5]\d\d)\b",
                                                           cells[3] + " " + cells[4]))
    # Then it lists exactly the answers this test's table covers
    assert found == SPEC_ANSWERS


@pytest.mark.parametrize("name", sorted(ROWS))
async def test_each_spec_answer_maps_to_its_result_or_exception(
    name: str, ctx: Ctx, dialect: Dialect
) -> None:
    entry = ROWS[name]
    if entry.only is not None and entry.only is not dialect:
        pytest.skip(f"{name}: {entry.only} only")
    # Given the devnet set up to give this answer, When the client makes the call
    try:
        outcome: Any = await entry.scenario(ctx)
    except CoordinatorError as exc:
        outcome = exc
    # Then the client returns the parsed answer, or raises the class the table names
    if isinstance(entry.expect, type):
        assert isinstance(outcome, entry.expect), f"{name}: got {outcome!r}"
        assert outcome.endpoint == name.split()[0]
    else:
        assert entry.expect(outcome), f"{name}: got {outcome!r}"


# --- answers any call can meet (auth, rate limit, server errors, transport) -------------

ENDPOINTS = sorted(SPEC_ANSWERS)
GENERAL: dict[str, tuple[dict[str, Any], type[CoordinatorError]]] = {
    "403": ({"kind": "status", "status": 403}, AuthRefused),
    "429": ({"kind": "status", "status": 429, "retry_after": 7}, RateLimited),
    "503": ({"kind": "status", "status": 503}, ServerError),
    "html 502 from a proxy": ({"kind": "malformed", "variant": "html_502"}, ServerError),
    "dropped before acting": ({"kind": "drop_before"}, Uncertain),
    "dropped after acting": ({"kind": "drop_after"}, Uncertain),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(GENERAL))
async def test_any_call_maps_auth_rate_limit_server_and_transport_failures(
    endpoint: str, case: str, ctx: Ctx, dialect: Dialect
) -> None:
    if endpoint in ONLY_2026_08 and dialect is not Dialect.V2026_08:
        pytest.skip("2026-08 only")
    fault, expected = dict(GENERAL[case][0]), GENERAL[case][1]
    # Given a registered client (holding a job) and the next answer of the endpoint armed
    client = await ctx.registered()
    ctx.devnet.inject(endpoint, fault.pop("kind"), **fault)
    # When the call is made
    with pytest.raises(expected) as caught:
        await call(ctx, client, endpoint)
    # Then it raises the class of the tree that tells the caller what to do next
    assert caught.value.endpoint == endpoint
    if expected is RateLimited:
        assert caught.value.retry_after == 7.0
    if expected in (AuthRefused, ServerError, RateLimited):
        assert caught.value.status == int(case.split()[-1]) if case[0].isdigit() else True


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_refused_key_is_auth_refused_on_every_call(
    endpoint: str, ctx: Ctx, dialect: Dialect
) -> None:
    if endpoint in ONLY_2026_08 and dialect is not Dialect.V2026_08:
        pytest.skip("2026-08 only")
    # Given a client whose key the coordinator does not know
    client = ctx.client(key="not-a-miner-key")
    # When it makes the call (on an existing job where one is needed), Then 401 -> AuthRefused
    job_id = (await ctx.devnet.submit_job({"type": "noop"}))["job_id"]
    calls = {"result": lambda: client.result(job_id, RESULT_BODY),
             "fail": lambda: client.fail(job_id, FAIL_BODY)}
    with pytest.raises(AuthRefused) as caught:
        await (calls[endpoint]() if endpoint in calls else call(ctx, client, endpoint))
    assert caught.value.status == 401


@pytest.mark.parametrize("endpoint, expected", [
    ("register", ProtocolViolation), ("heartbeat", ProtocolViolation),
    ("poll", ProtocolViolation), ("earnings", ProtocolViolation),
    # a 200 to /result or /fail that cannot be read may have been acted on
    ("result", Uncertain), ("fail", Uncertain),
])
@pytest.mark.parametrize("variant", ["bad_json", "missing_fields", "wrong_types", "html_200"])
async def test_an_unreadable_success_answer_is_a_protocol_violation_or_uncertain(
    endpoint: str, expected: type[CoordinatorError], variant: str, ctx: Ctx, dialect: Dialect
) -> None:
    if endpoint in ONLY_2026_08 and dialect is not Dialect.V2026_08:
        pytest.skip("2026-08 only")
    # Given a registered client (with a job queued for the poll case) and a garbled answer armed
    client = await ctx.registered()
    if endpoint == "poll":
        await ctx.devnet.submit_job({"type": "noop"})
    ctx.devnet.inject(endpoint, "malformed", variant=variant)
    # When the call is made, Then it raises the class that says what the answer means
    with pytest.raises(expected) as caught:
        await call(ctx, client, endpoint)
    assert caught.value.endpoint == endpoint and caught.value.status == 200


async def test_a_poll_answer_with_a_job_id_but_a_bad_payload_comes_back_raw(ctx: Ctx) -> None:
    # Given an assigned job whose answer names it but carries a wrong-typed payload
    client = await ctx.registered()
    job_id = (await ctx.devnet.submit_job({"type": "noop"}))["job_id"]
    ctx.devnet.inject("poll", "status", status=200, act=True,
                      body=f'{{"job_id": "{job_id}", "payload": "not an object"}}')
    # When polled, Then the raw dict comes back, so the caller can fail that job
    answer = await client.poll()
    assert answer == {"job_id": job_id, "payload": "not an object"}


async def test_a_read_timeout_is_uncertain(ctx: Ctx) -> None:
    # Given a coordinator that acts only after the client has stopped waiting
    client = await ctx.registered(read_timeout_s=0.2)
    job_id = await ctx.assigned(client)
    ctx.devnet.inject("result", "delay", delay=0.5)
    # When the result is sent, Then the client cannot know whether it arrived
    with pytest.raises(Uncertain) as caught:
        await client.result(job_id, RESULT_BODY)
    assert "Timeout" in caught.value.message


async def test_a_refused_connection_is_not_sent(ctx: Ctx) -> None:
    # Given a port nothing listens on (a stopped devnet's)
    async with Devnet(ctx.devnet.dialect, rate_limits=False) as gone:
        url = gone.url
    client = ctx.client(url=url)
    # When any call is made, Then the request provably never left: NotSent (safe to resend)
    with pytest.raises(NotSent) as caught:
        await client.result("j1", RESULT_BODY)
    assert caught.value.endpoint == "result" and "ConnectError" in caught.value.message


def test_the_error_tree_keeps_transport_and_refusals_apart() -> None:
    # Given the documented tree, Then each class sits on its branch
    for cls in (NotSent, Uncertain, ServerError, RateLimited):
        assert issubclass(cls, Unavailable)
    for cls in (AuthRefused, NotRegistered, NotFound, Invalid):
        assert issubclass(cls, Rejected)
    assert not issubclass(ProtocolViolation, Unavailable | Rejected)
    assert all(issubclass(c, CoordinatorError) for c in (Unavailable, Rejected, ProtocolViolation))
    assert not any(issubclass(c, httpx.HTTPError) for c in (Unavailable, Rejected))
