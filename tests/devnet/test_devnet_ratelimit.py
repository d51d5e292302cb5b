"""2026-08 rate limits per client IP: 429 with Retry-After; scalable and switchable."""

from __future__ import annotations

import httpx
import pytest
from devnet_helpers import MINER_KEY, MinerClient

from aitbc_miner.devnet import Devnet, Dialect, FakeClock
from aitbc_miner.devnet.ratelimit import DEFAULT_LIMITS_2026_08

V01, V08 = Dialect.V2026_01, Dialect.V2026_08
REGISTER = {"capabilities": {}, "concurrency": 1}


async def _burst(http: httpx.AsyncClient, path: str, n: int) -> list[httpx.Response]:
    return [await http.post(path, json=REGISTER, headers={"X-Api-Key": MINER_KEY})
            for _ in range(n)]


async def test_2026_08_defaults_are_on_and_2026_01_has_none() -> None:
    async with Devnet(V08, miner_keys=[MINER_KEY]) as devnet:
        assert devnet.limiter.limits == DEFAULT_LIMITS_2026_08
        async with httpx.AsyncClient(base_url=devnet.api_url) as http:
            answers = await _burst(http, "/miners/register", 51)
        assert [r.status_code for r in answers[:50]] == [200] * 50
        assert answers[50].status_code == 429
        assert 1 <= int(answers[50].headers["Retry-After"]) <= 60
    async with Devnet(V01, miner_keys=[MINER_KEY]) as devnet:
        assert devnet.limiter.limits == {}
        async with httpx.AsyncClient(base_url=devnet.api_url) as http:
            assert {r.status_code for r in await _burst(http, "/miners/register", 51)} == {200}


async def test_scale_and_disable() -> None:
    scaled = Devnet(V08, rate_limit_scale=0.1)
    assert scaled.limiter.limits["register"] == (5, 60.0)
    assert scaled.limiter.limits["poll"] == (10, 60.0)
    assert Devnet(V08, rate_limits=False).limiter.limits == {}


@pytest.mark.parametrize("dialect", [V01, V08])
async def test_small_window_burst_then_reopen(dialect: Dialect) -> None:
    clock = FakeClock()
    limits = {"poll": (5, 2.0)}
    devnet = Devnet(dialect, miner_keys=[MINER_KEY], rate_limits=limits, clock=clock)
    async with devnet, httpx.AsyncClient(base_url=devnet.api_url) as http:
        miner = MinerClient(http, devnet, "rig-1")
        await miner.register()
        statuses = [(await miner.poll()).status_code for _ in range(6)]
        assert statuses == [204] * 5 + [429]
        limited = await miner.poll()
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
        assert "rate limit" in limited.json()["detail"]
        assert (await miner.heartbeat(0)).status_code == 200  # other endpoints unaffected
        clock.advance(1.2)
        assert (await miner.poll()).headers["Retry-After"] == "1"
        clock.advance(0.8)
        assert (await miner.poll()).status_code == 204


async def test_limits_are_per_client_ip() -> None:
    async with Devnet(V08, miner_keys=[MINER_KEY], rate_limits={"register": (2, 60.0)}) as devnet:
        async with httpx.AsyncClient(base_url=devnet.api_url) as first:
            codes = [r.status_code for r in await _burst(first, "/miners/register", 3)]
            assert codes == [200, 200, 429]
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=devnet.api_url, transport=transport) as second:
            codes = [r.status_code for r in await _burst(second, "/miners/register", 2)]
            assert codes == [200, 200]
