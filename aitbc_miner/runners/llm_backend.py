"""An HTTP LLM backend's shared state: one client, the model list, up or down, and how
its errors read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ..codes import ErrorCode
from .base import JobFailed

log = logging.getLogger(__name__)

DOWN_REFRESH_S = 5.0  # how often a backend that is down is probed (by default)

# --- a backend with a model list ----------------------------------------------------------------


class BackendUnavailable(Exception):
    """The backend could not be reached (connect failed, connection dropped)."""


class HttpBackend:
    """Shared state of an HTTP LLM backend: one client, the model list, up/down.

    ``refresh()`` asks the backend for its models; ``watch()`` does so every
    ``refresh_interval_s`` (every ``down_refresh_s`` at most while it is down, and at
    once when a job finds it unreachable) and is
    what the engine schedules. ``available()`` is false only once the backend was seen
    down; ``capabilities()`` is ``{"models": [...]}`` only while it is known up.
    ``on_change`` (set by whoever hosts the runner) is called when availability or the
    model list changes, so the session can re-register with the new capabilities.
    """

    backend = "http"

    def __init__(self, base_url: str, *, refresh_interval_s: float = 30.0,
                 down_refresh_s: float = DOWN_REFRESH_S,
                 connect_timeout_s: float = 3.0, request_timeout_s: float = 10.0,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.refresh_interval_s = refresh_interval_s
        self.down_refresh_s = down_refresh_s
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._headers = dict(headers or {})
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._up: bool | None = None  # None: not probed yet
        self._models: tuple[str, ...] = ()
        self.last_error: str | None = None
        self.on_change: Callable[[], None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # --- the client --------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            # read=None: a stream may be quiet for long (model load); the job timeout bounds it.
            # trust_env=False: a local backend is never reached through an HTTP(S)_PROXY.
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, transport=self._transport,
                timeout=httpx.Timeout(connect=self.connect_timeout_s, read=None,
                                      write=self.request_timeout_s, pool=None),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=16),
                trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- state -------------------------------------------------------------------------

    @property
    def up(self) -> bool | None:
        return self._up

    @property
    def models(self) -> tuple[str, ...]:
        return self._models

    def available(self) -> bool:
        return self._up is not False

    def capabilities(self) -> Mapping[str, Any]:
        return {"models": list(self._models)} if self._up else {}

    async def list_models(self) -> list[str]:  # pragma: no cover - each backend has its own
        raise NotImplementedError

    async def refresh(self) -> bool:
        """Ask the backend for its models now; returns whether it is up."""
        async with self._refresh_lock:
            try:
                async with asyncio.timeout(self.connect_timeout_s + self.request_timeout_s):
                    models = await self.list_models()
            except (BackendUnavailable, httpx.HTTPError, TimeoutError, ValueError) as exc:
                self._set(False, self._models, f"{type(exc).__name__}: {exc}".strip(": "))
                return False
            self._set(True, tuple(sorted(set(models))), None)
            return True

    def mark_down(self, reason: str) -> None:
        """A job found the backend unreachable: withdraw it and probe again soon."""
        self._set(False, self._models, reason)
        self._wake.set()

    def _set(self, up: bool, models: tuple[str, ...], error: str | None) -> None:
        changed = up != self._up or (up and models != self._models)
        if up != self._up:
            if up:
                log.info("%s backend at %s is up with %d model(s)", self.backend, self.base_url,
                         len(models))
            else:
                log.warning("%s backend at %s is unavailable: %s", self.backend, self.base_url,
                            error)
        self._up, self._models, self.last_error = up, models, error
        if changed and self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("on_change callback failed")

    async def watch(self) -> None:
        """Refresh forever (the engine runs this as one of its loops)."""
        while True:
            await self.refresh()
            delay = self.refresh_interval_s if self._up else min(self.refresh_interval_s,
                                                                 self.down_refresh_s)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()


def error_text(response: httpx.Response, body: bytes) -> str:
    """The backend's error message: Ollama ``{"error": str}``, OpenAI ``{"error": {...}}``,
    vLLM ``{"message": str}``; else the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        nested = err.get("message") if isinstance(err, dict) else None
        for said in (err, nested, data.get("message"), data.get("detail")):
            if isinstance(said, str):
                return said
    text = body.decode("utf-8", "replace").strip()
    return text[:300] or f"HTTP {response.status_code}"


def looks_like_oom(message: str) -> bool:
    text = message.lower()
    return "out of memory" in text or "requires more system memory" in text or "oom" in text.split()


def stream_object(text: str, sender: str) -> dict[str, Any]:
    """One streamed chunk (an NDJSON line, an SSE event) as a JSON object; anything else
    means the backend broke its protocol: ``E_BACKEND_UNAVAILABLE``, quoting the start.
    ``sender`` reads like "ollama sent a line"."""
    try:
        chunk = json.loads(text)
    except ValueError as exc:
        raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                        f"{sender} that is not JSON: {text[:80]!r}") from exc
    if not isinstance(chunk, dict):
        raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                        f"{sender} that is not an object: {text[:80]!r}")
    return chunk
