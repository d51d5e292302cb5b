"""The demo feeder keeps N jobs queued through the client route, from a seeded mix."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from devnet_helpers import MinerClient

from aitbc_miner.devnet import Devnet
from aitbc_miner.devnet.feeder import Feeder, make_payload


def test_payload_mix_is_seeded_and_covers_all_types() -> None:
    assert ([make_payload(random.Random(3)) for _ in range(2)]
            == [make_payload(random.Random(3))] * 2)
    rng = random.Random(1)
    draws = [make_payload(rng) for _ in range(400)]
    assert {d["type"] for d in draws} == {"sleep", "echo", "sha256", "transcribe"}
    for d in draws:
        if d["type"] == "sleep":
            assert 0.1 <= d["seconds"] <= 2.0
        elif d["type"] in ("echo", "sha256"):
            assert isinstance(d["data"], str) and d["data"]


async def test_top_up_keeps_target_queued(devnet: Devnet, miner: MinerClient) -> None:
    feeder = Feeder(devnet.url, devnet.client_headers(), target=4, seed=5)
    async with feeder.client() as http:
        assert await feeder.top_up(http) == 4
        assert await feeder.top_up(http) == 0
        await miner.register(concurrency=0)
        for _ in range(3):
            assert (await miner.poll()).status_code == 200
        assert await feeder.top_up(http) == 3
    states = [j["state"] for j in devnet.jobs.values()]
    assert states.count("QUEUED") == 4 and states.count("RUNNING") == 3


async def test_run_until_cancelled(devnet: Devnet) -> None:
    rounds = asyncio.Event()

    class Watched(Feeder):
        async def top_up(self, http: httpx.AsyncClient) -> int:
            added = await super().top_up(http)
            rounds.set()
            return added

    task = asyncio.create_task(
        Watched(devnet.url, devnet.client_headers(), target=2, interval=0.01).run())
    await asyncio.wait_for(rounds.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sum(j["state"] == "QUEUED" for j in devnet.jobs.values()) == 2
