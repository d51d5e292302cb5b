"""The aiohttp application: spec routes under /v1, fault injection, and /_devnet admin.

Every protocol route goes through ``Endpoint``: count the request, apply an armed fault
(answer without acting, delay, act then drop, act then garble), apply the 2026-08 rate
limit, authenticate, parse the body as FastAPI would (422), then call the coordinator.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..protocol import (
    API_PREFIX,
    CreateJobRequest,
    Dialect,
    FailRequest,
    HeartbeatRequest,
    PollRequest,
    RegisterRequest,
    ResultRequest,
)
from .artifacts import ArtifactStore
from .auth import AuthConfig, client_identity, miner_identity
from .coordinator import Coordinator
from .errors import HttpError
from .faults import Fault, FaultBook, malformed_body
from .ratelimit import RateLimiter, retry_after_header

M = TypeVar("M", bound=BaseModel)
# The real coordinator (uvicorn) sets no request size limit; aiohttp's default is 1 MiB.
MAX_REQUEST_BYTES = 64 << 20


@dataclass(slots=True)
class Reply:
    """An answer before it is written, so a fault can still reshape or withhold it."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None

    @classmethod
    def of_error(cls, exc: HttpError) -> Reply:
        body = None if exc.text is not None else {"detail": exc.detail}
        return cls(exc.status, body, dict(exc.headers), exc.text)

    def response(self) -> web.Response:
        if self.status == 204:
            return web.Response(status=204, headers=self.headers)
        if self.text is not None:
            return web.Response(status=self.status, text=self.text, headers=self.headers)
        return web.json_response(self.body, status=self.status, headers=self.headers)


Action = Callable[[web.Request], Awaitable[Reply]]


def drop_connection(request: web.Request) -> web.Response:
    """Close the socket without writing anything; the caller sees no response at all."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=599)  # never reaches the wire


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request body as ``model``, or FastAPI's 422 shapes."""
    raw = await request.read()
    if not raw.strip():
        raise HttpError(422, [{"type": "missing", "loc": ["body"], "msg": "Field required"}])
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise HttpError(
            422, [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc}"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        raise HttpError(422, [{**e, "loc": ["body", *e["loc"]]} for e in detail]) from None


@dataclass
class DevnetApp:
    """Routes for one dialect, sharing the coordinator, faults, limiter and counters."""

    coordinator: Coordinator
    auth: AuthConfig
    faults: FaultBook
    limiter: RateLimiter
    requests: Counter[str] = field(default_factory=Counter)
    snapshot: Callable[[], dict[str, Any]] | None = None
    artifacts: ArtifactStore | None = None
    request_log: deque[str] | None = None

    @property
    def dialect(self) -> Dialect:
        return self.auth.dialect

    # --- the endpoint pipeline ---------------------------------------------------

    def endpoint(
        self, name: str, action: Action
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests[name] += 1
            fault = self.faults.take(name)
            if fault is not None and not fault.acts_first:
                return self._fault_instead(request, fault)
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            reply = await self._act(name, request, action)
            if fault is None or fault.kind == "delay":
                return reply.response()
            return self._fault_after(request, fault, name, reply)

        return handle

    async def _act(self, name: str, request: web.Request, action: Action) -> Reply:
        wait = self.limiter.check(name, request.remote or "unknown")
        if wait is not None:
            limit = self.limiter.limits[name]
            detail = f"rate limit exceeded: {limit[0]} per {limit[1]:g} seconds"
            return Reply(429, {"detail": detail}, {"Retry-After": retry_after_header(wait)})
        try:
            return await action(request)
        except HttpError as exc:
            return Reply.of_error(exc)

    @staticmethod
    def _status_reply(fault: Fault) -> web.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = retry_after_header(fault.retry_after)
        body = (fault.body if fault.body is not None
                else json.dumps({"detail": f"injected {fault.status}"}))
        return web.Response(status=fault.status, text=body, content_type=fault.content_type,
                            headers=headers)

    def _fault_instead(self, request: web.Request, fault: Fault) -> web.Response:
        if fault.kind == "drop_before":
            return drop_connection(request)
        if fault.kind == "malformed":
            status, text, ctype = malformed_body(fault.variant, "", None)
            return web.Response(status=status, text=text, content_type=ctype)
        return self._status_reply(fault)

    def _fault_after(
        self, request: web.Request, fault: Fault, name: str, reply: Reply
    ) -> web.Response:
        if fault.kind == "drop_after":
            return drop_connection(request)
        if fault.kind == "malformed":
            status, text, ctype = malformed_body(fault.variant, name, reply.body)
            return web.Response(status=status, text=text, content_type=ctype)
        if fault.kind == "drop_before":  # act=True on a drop_before: same as drop_after
            return drop_connection(request)
        return self._status_reply(fault)

    # --- identities --------------------------------------------------------------

    def _miner(self, request: web.Request) -> str:
        return miner_identity(self.auth, request.headers, self.coordinator.clock.now())

    def _client(self, request: web.Request) -> str:
        return client_identity(self.auth, request.headers, self.coordinator.clock.now())

    # --- miner routes ------------------------------------------------------------

    async def register(self, request: web.Request) -> Reply:
        miner_id = self._miner(request)
        return Reply(body=self.coordinator.register(
            miner_id, await parse_body(request, RegisterRequest)))

    async def heartbeat(self, request: web.Request) -> Reply:
        miner_id = self._miner(request)
        return Reply(body=self.coordinator.heartbeat(
            miner_id, await parse_body(request, HeartbeatRequest)))

    async def poll(self, request: web.Request) -> Reply:
        miner_id = self._miner(request)
        await parse_body(request, PollRequest)  # max_wait_seconds: accepted, ignored
        job = self.coordinator.poll(miner_id)
        return Reply(204) if job is None else Reply(body=job)

    async def result(self, request: web.Request) -> Reply:
        miner_id = self._miner(request)
        req = await parse_body(request, ResultRequest)
        return Reply(body=self.coordinator.result(miner_id, request.match_info["job_id"], req))

    async def fail(self, request: web.Request) -> Reply:
        miner_id = self._miner(request)
        req = await parse_body(request, FailRequest)
        return Reply(body=self.coordinator.fail(miner_id, request.match_info["job_id"], req))

    async def earnings(self, request: web.Request) -> Reply:
        self._miner(request)
        return Reply(body=self.coordinator.earnings(request.match_info["miner_id"]))

    async def deregister(self, request: web.Request) -> Reply:
        self._miner(request)
        return Reply(body=self.coordinator.deregister(request.match_info["miner_id"]))

    # --- client routes -----------------------------------------------------------

    async def create_job(self, request: web.Request) -> Reply:
        client = self._client(request)
        return Reply(201, self.coordinator.create_job(
            client, await parse_body(request, CreateJobRequest)))

    def _client_read(self, read: Callable[[str], dict[str, Any]]) -> Action:
        async def action(request: web.Request) -> Reply:
            self._client(request)
            return Reply(body=read(request.match_info["job_id"]))

        return action

    async def health(self, request: web.Request) -> Reply:
        return Reply(body={"status": "ok", "env": "devnet", "dialect": self.dialect.value})

    # --- admin (/_devnet) --------------------------------------------------------

    async def admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot() if self.snapshot else {})

    async def admin_faults(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.faults.clear(request.query.get("endpoint"))
        elif request.method == "POST":
            try:
                data = await request.json()
                for item in data if isinstance(data, list) else [data]:
                    self.faults.add(Fault.from_dict(item))
            except (ValueError, TypeError, AttributeError) as exc:
                return web.json_response({"detail": str(exc)}, status=400)
        return web.json_response({"faults": self.faults.list()})

    async def admin_reputation(self, request: web.Request) -> web.Response:
        try:
            value = float((await request.json())["reputation"])
            self.coordinator.set_reputation(request.match_info["miner_id"], value)
        except HttpError as exc:
            return web.json_response({"detail": exc.detail}, status=exc.status)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"detail": f"bad request: {exc}"}, status=400)
        return web.json_response({"status": "ok"})

    async def admin_clock(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.coordinator.clock.advance(float((await request.json())["advance"]))
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"detail": f"bad request: {exc}"}, status=400)
        return web.json_response({"now": self.coordinator.clock.now()})

    # --- wiring ------------------------------------------------------------------

    @web.middleware
    async def _log_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record every request line as it arrived, before routing (tests read it)."""
        if self.request_log is not None:
            self.request_log.append(f"{request.method} {request.raw_path}")
        response: web.StreamResponse = await handler(request)
        return response

    def build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self._log_request])
        r, v, ep, c = app.router, API_PREFIX, self.endpoint, self.coordinator
        r.add_post(f"{v}/miners/register", ep("register", self.register))
        r.add_post(f"{v}/miners/heartbeat", ep("heartbeat", self.heartbeat))
        r.add_post(f"{v}/miners/poll", ep("poll", self.poll))
        r.add_post(f"{v}/miners/{{job_id}}/result", ep("result", self.result))
        r.add_post(f"{v}/miners/{{job_id}}/fail", ep("fail", self.fail))
        if self.artifacts is not None:
            self.artifacts.check_auth = lambda h: miner_identity(self.auth, h, c.clock.now())
            self.artifacts.add_routes(r, v)
        if self.dialect is Dialect.V2026_08:
            r.add_post(f"{v}/miners/{{miner_id}}/earnings", ep("earnings", self.earnings))
            r.add_delete(f"{v}/miners/{{miner_id}}", ep("deregister", self.deregister))
            r.add_get("/health", ep("health", self.health))
        else:
            r.add_get(f"{v}/health", ep("health", self.health))
        r.add_post(f"{v}/jobs", ep("jobs_create", self.create_job))
        r.add_get(f"{v}/jobs/{{job_id}}", ep("job_get", self._client_read(c.get_job)))
        r.add_get(f"{v}/jobs/{{job_id}}/result", ep("job_result", self._client_read(c.job_result)))
        r.add_post(f"{v}/jobs/{{job_id}}/cancel", ep("job_cancel", self._client_read(c.cancel)))
        r.add_get(f"{v}/jobs/{{job_id}}/receipt",
                  ep("job_receipt", self._client_read(c.latest_receipt)))
        r.add_get(f"{v}/jobs/{{job_id}}/receipts",
                  ep("job_receipts", self._client_read(c.receipts)))
        r.add_get("/_devnet/state", self.admin_state)
        for method in ("GET", "POST", "DELETE"):
            r.add_route(method, "/_devnet/faults", self.admin_faults)
        r.add_post("/_devnet/miners/{miner_id}/reputation", self.admin_reputation)
        r.add_get("/_devnet/clock", self.admin_clock)
        r.add_post("/_devnet/clock", self.admin_clock)
        return app
