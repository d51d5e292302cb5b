"""Shared helpers for the devnet tests: a scripted miner over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from aitbc_miner.devnet import Devnet, Dialect

MINER_KEY = "miner-key-1"
OTHER_KEY = "miner-key-2"


def identity(devnet: Devnet, miner_id: str, key: str = MINER_KEY) -> str:
    """The id the coordinator gives a miner sending ``key`` and ``X-Miner-ID: miner_id``."""
    return key if devnet.dialect is Dialect.V2026_01 else miner_id


class MinerClient:
    """A scripted miner: the headers the real miner sends (key and id) on one client."""

    def __init__(
        self, http: httpx.AsyncClient, devnet: Devnet, miner_id: str, key: str = MINER_KEY
    ):
        self.http, self.devnet = http, devnet
        self.headers = {"X-Api-Key": key, "X-Miner-ID": miner_id}
        self.id = identity(devnet, miner_id, key)

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.http.post(path, json=body, headers=self.headers)

    async def register(
        self,
        capabilities: dict[str, Any] | None = None,
        concurrency: int = 1,
        region: str | None = None,
    ) -> httpx.Response:
        body = {"capabilities": capabilities or {}, "concurrency": concurrency, "region": region}
        return await self.post("/miners/register", body)

    async def heartbeat(self, inflight: int, status: str = "ONLINE") -> httpx.Response:
        return await self.post("/miners/heartbeat",
                               {"inflight": inflight, "status": status, "metadata": {}})

    async def poll(self) -> httpx.Response:
        return await self.post("/miners/poll", {"max_wait_seconds": 5})

    async def result(
        self, job_id: str, result: dict | None = None, metrics: dict | None = None
    ) -> httpx.Response:
        return await self.post(
            f"/miners/{job_id}/result",
            {"result": result or {"output": "ok"}, "metrics": metrics or {"duration_ms": 1000}},
        )

    async def fail(
        self, job_id: str, code: str = "E_UNSUPPORTED", message: str = "no runner"
    ) -> httpx.Response:
        return await self.post(
            f"/miners/{job_id}/fail", {"error_code": code, "error_message": message, "metrics": {}}
        )

    def inflight(self) -> int:
        return int(self.devnet.miners[self.id]["inflight"])
