"""The coordinator client: one httpx.AsyncClient, the spec's calls, and one error tree.

Error tree (httpx exceptions are translated here and nowhere else)::

    CoordinatorError
    ├── Unavailable            try again later (with backoff)
    │   ├── NotSent            provably never reached the server (connect / pool errors)
    │   ├── Uncertain          may have reached it (read timeout, dropped connection, junk 200)
    │   ├── ServerError        5xx answer
    │   └── RateLimited        429, with Retry-After
    ├── Rejected               the server said no; retrying the same call will not help
    │   ├── AuthRefused        401 / 403: stop that activity and tell the operator
    │   ├── NotRegistered      heartbeat 404, poll 500: register again
    │   ├── NotFound           404 on a job
    │   └── Invalid            422 and other 4xx
    │       └── UnsafeJobId    a job id no URL may be built from (never sent)
    └── ProtocolViolation      a 2xx answer that does not match the spec's shape

Which calls may be repeated is decided by the caller (outbox, loops) from this tree:
``/poll``, ``/result`` and ``/fail`` are not idempotent (spec fact 4).

Answers are hostile input (docs/hostile-input.md): at most ``MAX_ANSWER_BYTES`` of an
answer are read (more is ``Uncertain``: the server may have acted), bodies are decoded
within bounds on size and depth, a poll answer naming an id that is not a job id is a
``ProtocolViolation``, and error texts quoted from answers are scrubbed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from . import __version__, untrusted
from .protocol import (
    API_PREFIX,
    AssignedJob,
    EarningsResponse,
    FailRequest,
    HeartbeatRequest,
    PollRequest,
    RegisterRequest,
    RegisterResponse,
    ResultRequest,
    ResultResponse,
    StatusResponse,
    is_job_id,
    shown_job_id,
)

M = TypeVar("M", bound=BaseModel)


class CoordinatorError(Exception):
    """Any failed exchange with the coordinator."""

    def __init__(self, endpoint: str, message: str, status: int | None = None):
        message = untrusted.scrub(message)  # it may quote an answer: keep it showable
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.message = message
        self.status = status


class Unavailable(CoordinatorError):
    """The coordinator could not be reached or could not serve the call now."""


class NotSent(Unavailable):
    """The request never left (connect error/timeout, pool timeout): safe to resend."""


class Uncertain(Unavailable):
    """The request may have been acted on (read timeout, connection dropped, junk answer)."""


class ServerError(Unavailable):
    """A 5xx answer: the server says it failed."""


class RateLimited(Unavailable):
    """429: the server asks us to come back after ``retry_after`` seconds."""

    def __init__(self, endpoint: str, message: str, retry_after: float | None):
        super().__init__(endpoint, message, 429)
        self.retry_after = retry_after


class Rejected(CoordinatorError):
    """The server refused the call; repeating it unchanged will not help."""


class AuthRefused(Rejected):
    """401/403: the miner key was refused. Never retried blindly."""


class NotRegistered(Rejected):
    """The coordinator does not know this miner (heartbeat 404, poll 500)."""


class NotFound(Rejected):
    """The coordinator does not know the job."""


class Invalid(Rejected):
    """422 or another 4xx: the request itself is wrong."""


class UnsafeJobId(Invalid):
    """The job id is not one coordinators issue: no URL is built from it, nothing is sent."""


class ProtocolViolation(CoordinatorError):
    """A success answer whose body does not match the protocol."""


# The errors raised before a request leaves the machine (httpx docs, transports).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_OK_CREATED = frozenset({200, 201})
_OK_OR_404 = frozenset({200, 404})


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer as read: its status, headers and at most ``MAX_ANSWER_BYTES`` of body."""

    status_code: int
    headers: httpx.Headers = field(repr=False)
    content: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call, for metrics and the status view; ``status`` None: no answer came."""

    endpoint: str
    status: int | None
    seconds: float


ExchangeObserver = Callable[[Exchange], None]


class CoordinatorClient:
    """The miner's side of the protocol. ``X-Api-Key`` and ``X-Miner-ID`` on every call."""

    def __init__(
        self,
        root_url: str,
        miner_key: str,
        miner_id: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.miner_id = miner_id
        self._http = httpx.AsyncClient(
            base_url=root_url.rstrip("/") + API_PREFIX,
            headers={
                "X-Api-Key": miner_key,
                "X-Miner-ID": miner_id,
                "User-Agent": f"aitbc-miner/{__version__}",
            },
            timeout=httpx.Timeout(
                read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s
            ),
            transport=transport,
            follow_redirects=False,
        )
        self.last_exchange: Exchange | None = None
        self.on_exchange: ExchangeObserver | None = None  # told of every call (metrics)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- calls ---------------------------------------------------------------------

    async def register(self, body: RegisterRequest) -> RegisterResponse:
        response = await self._post("register", "/miners/register", body, _OK_CREATED)
        return self._parse("register", response, RegisterResponse)

    async def heartbeat(self, body: HeartbeatRequest) -> StatusResponse:
        response = await self._post("heartbeat", "/miners/heartbeat", body, _OK_OR_404)
        if response.status_code == 404:
            raise NotRegistered("heartbeat", _detail(response), 404)
        return self._parse("heartbeat", response, StatusResponse)

    async def poll(self) -> AssignedJob | dict[str, Any] | None:
        """The next job, ``None`` when there is none.

        An assigned job whose body is malformed but names a ``job_id`` comes back as the
        raw dict, so the caller can fail that job cleanly (the coordinator counts it ours).
        """
        response = await self._post(
            "poll", "/miners/poll", PollRequest(max_wait_seconds=0), frozenset({200, 204, 500})
        )
        if response.status_code == 204:
            return None
        if response.status_code == 500:
            # The spec: 500 is what an unregistered miner gets from /poll.
            raise NotRegistered("poll", _detail(response), 500)
        # Nesting past the bound is cut off (not fatal) so a job whose payload is hostile
        # still comes back, raw, to be failed: the coordinator counts it ours.
        data, pruned = self._json("poll", response, prune=True)
        names_job = isinstance(data, dict) and "job_id" in data
        if names_job:
            if not is_job_id(data["job_id"]):
                raise ProtocolViolation(
                    "poll", f"answer names an invalid job id {shown_job_id(data['job_id'])}",
                    response.status_code)
            if pruned:
                return dict(data)
        try:
            return AssignedJob.model_validate(data)
        except ValidationError as exc:
            if names_job:
                return dict(data)
            raise ProtocolViolation("poll", _summary(exc), response.status_code) from exc

    async def result(self, job_id: str, body: ResultRequest | dict[str, Any]) -> ResultResponse:
        response = await self._post("result", _job_path(job_id, "result"), body, _OK_OR_404)
        if response.status_code == 404:
            raise NotFound("result", _detail(response), 404)
        try:
            return self._parse("result", response, ResultResponse)
        except ProtocolViolation as exc:
            # A 200 whose body we cannot read: the coordinator may have made a receipt.
            raise Uncertain("result", f"unreadable success answer ({exc.message})", 200) from exc

    async def fail(self, job_id: str, body: FailRequest | dict[str, Any]) -> StatusResponse:
        response = await self._post("fail", _job_path(job_id, "fail"), body, _OK_OR_404)
        if response.status_code == 404:
            raise NotFound("fail", _detail(response), 404)
        try:
            return self._parse("fail", response, StatusResponse)
        except ProtocolViolation as exc:
            raise Uncertain("fail", f"unreadable success answer ({exc.message})", 200) from exc

    async def earnings(self) -> EarningsResponse | None:
        """2026-08's earnings call; ``None`` where the coordinator has no such route."""
        response = await self._post(
            "earnings", f"/miners/{self.miner_id}/earnings", None, frozenset({200, 404, 405})
        )
        if response.status_code in (404, 405):
            return None
        answer = self._parse("earnings", response, EarningsResponse)
        if answer.error:
            raise Invalid("earnings", answer.error, response.status_code)
        if "earnings_history" not in answer.model_fields_set:
            # The outbox reads "not listed" as "never arrived" and resends: an answer without
            # the list must not pass for an empty one (that would make a duplicate receipt).
            raise ProtocolViolation(
                "earnings", "answer does not match the protocol: earnings_history: Field required",
                response.status_code)
        return answer

    async def deregister(self) -> None:
        """2026-08's DELETE; a 404/405 (unknown miner, or 2026-01) is not an error here."""
        response = await self._request("deregister", "DELETE", f"/miners/{self.miner_id}", None)
        if response.status_code not in (200, 404, 405):
            self._raise_for_status("deregister", response)

    # --- plumbing ------------------------------------------------------------------

    async def _post(
        self, endpoint: str, path: str, body: BaseModel | dict[str, Any] | None,
        handled: frozenset[int] = frozenset({200}),
    ) -> Answer:
        """POST and raise for any status the calling method does not handle itself."""
        response = await self._request(endpoint, "POST", path, body)
        if response.status_code not in handled:
            self._raise_for_status(endpoint, response)
        return response

    async def _request(
        self, endpoint: str, method: str, path: str, body: BaseModel | dict[str, Any] | None
    ) -> Answer:
        content = None
        if body is not None:
            data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
            # ASCII: a lone surrogate in a message travels escaped instead of failing.
            content = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        request = self._http.build_request(method, path, content=content, headers=headers)
        started = time.perf_counter()
        status: int | None = None
        try:
            response = await self._http.send(request, stream=True)
            status = response.status_code
            try:
                answer = await _read_bounded(endpoint, response)
            finally:
                await response.aclose()
        except _NOT_SENT as exc:
            raise NotSent(endpoint, _transport_message(exc)) from exc
        except httpx.RequestError as exc:  # transport errors, and a body that cannot be decoded
            raise Uncertain(endpoint, _transport_message(exc)) from exc
        finally:
            exchange = Exchange(endpoint, status, time.perf_counter() - started)
            if self.on_exchange is not None:
                self.on_exchange(exchange)
        self.last_exchange = exchange
        return answer

    @staticmethod
    def _raise_for_status(endpoint: str, response: Answer) -> None:
        status = response.status_code
        detail = _detail(response)
        if status in (401, 403):
            raise AuthRefused(endpoint, f"{status} {detail}", status)
        if status == 429:
            raise RateLimited(endpoint, f"429 {detail}", _retry_after(response))
        if status >= 500:
            raise ServerError(endpoint, f"{status} {detail}", status)
        if status == 404:
            raise NotFound(endpoint, f"404 {detail}", status)
        raise Invalid(endpoint, f"{status} {detail}", status)

    def _json(self, endpoint: str, response: Answer, *, prune: bool = False) -> Any:
        """The answer's JSON within bounds; with ``prune``, (JSON, whether cut off)."""
        try:
            if prune:
                return untrusted.loads_pruned(response.content)
            return untrusted.loads(response.content)
        except untrusted.Malformed as exc:
            kind = response.headers.get("content-type", "no content-type")
            raise ProtocolViolation(
                endpoint,
                f"{response.status_code} answer is not JSON ({kind}; {exc}): "
                f"{_snippet(response)}",
                response.status_code,
            ) from exc

    def _parse(self, endpoint: str, response: Answer, model: type[M]) -> M:
        data = self._json(endpoint, response)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ProtocolViolation(endpoint, _summary(exc), response.status_code) from exc


def _job_path(job_id: str, call: str) -> str:
    """``/miners/{job_id}/{call}``, only ever for an id that is a job id."""
    if not is_job_id(job_id):
        raise UnsafeJobId(call, f"refusing to build a URL from job id {shown_job_id(job_id)}")
    return f"/miners/{job_id}/{call}"


async def _read_bounded(endpoint: str, response: httpx.Response) -> Answer:
    """Read at most ``MAX_ANSWER_BYTES`` (decoded) of an answer; a longer one is not read
    on, and is ``Uncertain``: the server answered, and may have acted."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > untrusted.MAX_ANSWER_BYTES:
            raise Uncertain(endpoint, f"{response.status_code} answer is longer than "
                            f"{untrusted.MAX_ANSWER_BYTES} bytes; not read", response.status_code)
    return Answer(response.status_code, response.headers, bytes(body))


def _retry_after(response: Answer) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; the caller's backoff applies


def _detail(response: Answer) -> str:
    try:
        data = untrusted.loads(response.content)
    except untrusted.Malformed:
        return _snippet(response)
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:200]
    return _snippet(response)


def _snippet(response: Answer, limit: int = 120) -> str:
    text = " ".join(response.content[:4 * limit].decode("utf-8", errors="replace").split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"answer does not match the protocol: {where}: {first['msg']}{more}"


def _transport_message(exc: httpx.RequestError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
