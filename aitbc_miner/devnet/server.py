"""``Devnet``: the reference coordinator on a loopback port, for tests and demos.

Usage::

    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        job = await devnet.submit_job({"type": "echo", "data": "hi"})
        ...  # point a miner at devnet.url, pin devnet.public_key_id
"""

from __future__ import annotations

import errno
import json as jsonlib
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..protocol import API_PREFIX, Dialect
from ..receipts import public_key_id
from .app import DevnetApp
from .artifacts import ArtifactStore
from .auth import AuthConfig, client_headers, miner_headers
from .clock import Clock, SystemClock
from .coordinator import Coordinator
from .faults import Fault, FaultBook
from .keys import KeyLike, key_bytes, to_key
from .ratelimit import RateLimiter, resolve_limits
from .store import Store
from .tokens import DEFAULT_JWT_SECRET

DEFAULT_MINER_KEYS = ("devnet-miner-key",)
DEFAULT_CLIENT_KEY = "devnet-client-key"
RateLimits = Mapping[str, tuple[int, float]] | bool | None
REQUEST_LOG_SIZE = 100_000


class Devnet:
    """One coordinator: sqlite state, an Ed25519 receipt key, faults, and an HTTP site."""

    def __init__(
        self,
        dialect: Dialect | str = Dialect.V2026_01,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_path: str | Path | None = None,
        miner_keys: Iterable[str] = DEFAULT_MINER_KEYS,
        client_key: str = DEFAULT_CLIENT_KEY,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        signing_key: KeyLike | None = None,
        receipt_signing: bool = True,
        rate_limits: RateLimits = None,
        rate_limit_scale: float = 1.0,
        clock: Clock | None = None,
        request_log_size: int = REQUEST_LOG_SIZE,
    ) -> None:
        """``rate_limits``: None = the dialect's default (2026-08 on, 2026-01 off), scaled by
        ``rate_limit_scale``; False = off; a mapping ``{"poll": (5, 1.0)}`` = exactly those
        (requests, window seconds). ``signing_key``: key object, 32 bytes or hex; absent, the
        key stored in ``state_path`` (or a new one, stored). ``clock``: default wall time.
        ``request_log_size``: how many requests ``request_log`` remembers.
        """
        self.dialect = Dialect(dialect)
        self.host, self.port = host, port
        self.state_path = Path(state_path) if state_path else None
        self.auth = AuthConfig(self.dialect, frozenset(miner_keys), client_key, jwt_secret)
        self.clock: Clock = clock or SystemClock()
        self.faults = FaultBook()
        self.artifacts = ArtifactStore()  # POST /v1/miners/{job_id}/artifacts
        limits = resolve_limits(self.dialect is Dialect.V2026_08, rate_limits, rate_limit_scale)
        self.limiter = RateLimiter(limits, self.clock)
        self.requests: Counter[str] = Counter()
        # Every request as it arrived ("POST /v1/miners/<id>/fail?..."), routed or not.
        self.request_log: deque[str] = deque(maxlen=request_log_size)
        self._given_key = to_key(signing_key) if signing_key is not None else None
        self._receipt_signing = receipt_signing
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._http: httpx.AsyncClient | None = None
        self.signing_key: Ed25519PrivateKey | None = None
        self.coordinator: Coordinator | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> Devnet:
        store = self._open_store()
        self.signing_key = self._resolve_key(store) if self._receipt_signing else None
        self.coordinator = Coordinator(store, self.dialect, self.clock, self.signing_key)
        app = DevnetApp(self.coordinator, self.auth, self.faults, self.limiter, self.requests,
                        self.state, self.artifacts, self.request_log)
        self._runner = web.AppRunner(app.build(), access_log=None, handle_signals=False)
        await self._runner.setup()
        self.port = await self._bind(store)
        store.set_meta("port", str(self.port))
        store.commit()
        return self

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._store is not None and self.state_path is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Devnet:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _open_store(self) -> Store:
        if self._store is None:
            self._store = Store(self.state_path)
        return self._store

    def _resolve_key(self, store: Store) -> Ed25519PrivateKey:
        """The given key, else the one this state was signing with, else a new one (kept)."""
        if self._given_key is not None:
            return self._given_key
        stored = store.get_meta("signing_key_hex")
        if stored:
            return to_key(stored)
        key = Ed25519PrivateKey.generate()
        store.set_meta("signing_key_hex", key_bytes(key).hex())
        store.commit()
        return key

    async def _bind(self, store: Store) -> int:
        """Port 0 with known state: come back on the port this state last used, if free."""
        assert self._runner is not None
        previous = store.get_meta("port")
        candidates = [int(previous), 0] if self.port == 0 and previous else [self.port]
        for i, port in enumerate(candidates):
            site = web.TCPSite(self._runner, self.host, port)
            try:
                await site.start()
            except OSError as exc:
                await site.stop()
                if exc.errno != errno.EADDRINUSE or i == len(candidates) - 1:
                    raise
                continue
            return site.port
        raise AssertionError("unreachable")

    # --- addresses and credentials -----------------------------------------------

    @property
    def url(self) -> str:
        """Base URL without the /v1 prefix."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def health_path(self) -> str:
        return "/health" if self.dialect is Dialect.V2026_08 else f"{API_PREFIX}/health"

    @property
    def public_key_id(self) -> str | None:
        """URL-safe b64 raw public key: what a miner pins. None when signing is off."""
        return public_key_id(self.signing_key) if self.signing_key is not None else None

    @property
    def miner_keys(self) -> list[str]:
        return sorted(self.auth.miner_keys)

    def client_headers(self, client_id: str = "devnet-client") -> dict[str, str]:
        return client_headers(
            self.dialect,
            client_key=self.auth.client_key,
            jwt_secret=self.auth.jwt_secret,
            client_id=client_id,
        )

    def miner_headers(self, key: str | None = None, miner_id: str | None = None) -> dict[str, str]:
        return miner_headers(key or self.miner_keys[0], miner_id)

    # --- client calls over real HTTP ---------------------------------------------

    async def client_request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """A client-route call (path under /v1) with this dialect's client credential.

        The body is sent as ASCII JSON, as most clients write it: a lone surrogate in a
        payload travels as its escape (UTF-8 cannot carry it)."""
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.api_url, timeout=10.0)
        headers = self.client_headers()
        content = None
        if json is not None:
            content = jsonlib.dumps(json, ensure_ascii=True).encode()
            headers["Content-Type"] = "application/json"
        return await self._http.request(method, path, content=content, headers=headers)

    async def submit_job(
        self,
        payload: dict[str, Any],
        constraints: dict[str, Any] | None = None,
        ttl_seconds: int = 900,
    ) -> dict[str, Any]:
        """POST /v1/jobs; returns the job view (raises on a non-201)."""
        body = {"payload": payload, "constraints": constraints or {}, "ttl_seconds": ttl_seconds}
        response = await self.client_request("POST", "/jobs", body)
        if response.status_code != 201:
            raise RuntimeError(f"submit_job: {response.status_code} {response.text}")
        return dict(response.json())

    # --- in-process control and inspection ---------------------------------------

    def inject(self, endpoint: str, kind: str, **options: Any) -> Fault:
        """Arm a fault (see ``faults``); e.g. ``inject("poll", "status", status=503, times=3)``."""
        return self.faults.inject(endpoint, kind, **options)

    def set_reputation(self, miner_id: str, reputation: float) -> None:
        self._coordinator.set_reputation(miner_id, reputation)

    @property
    def _coordinator(self) -> Coordinator:
        if self.coordinator is None:
            raise RuntimeError("devnet not started")
        return self.coordinator

    @property
    def miners(self) -> dict[str, dict[str, Any]]:
        return self._coordinator.miners_snapshot()

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        return self._coordinator.jobs_snapshot()

    @property
    def receipts(self) -> list[dict[str, Any]]:
        return self._coordinator.store.receipts()

    def state(self) -> dict[str, Any]:
        """What ``GET /_devnet/state`` answers."""
        jobs = self.jobs
        return {
            "dialect": self.dialect.value,
            "url": self.url,
            "public_key_id": self.public_key_id,
            "now": self.clock.now(),
            "miners": self.miners,
            "jobs": jobs,
            "job_states": dict(Counter(j["state"] for j in jobs.values())),
            "receipts": sum(j["receipts"] for j in jobs.values()),
            "requests": dict(self.requests),
            "faults": self.faults.list(),
            "rate_limits": {k: list(v) for k, v in self.limiter.limits.items()},
        }
