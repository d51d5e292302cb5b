"""FIFO dispatch filtered by constraints (spec fact 6), and the 2026-08 reputation rule."""

from __future__ import annotations

from typing import Any

import pytest
from devnet_helpers import MinerClient

from aitbc_miner.devnet import Devnet, Dialect

V01, V08 = Dialect.V2026_01, Dialect.V2026_08
CAPS = {
    "gpus": [{"name": "RTX 4090", "memory_mb": 24564}],
    "cuda": "12.4",
    "models": ["llama3.2:latest", "mistral"],
    "price": 0.02,
}

MATCHES: list[tuple[str, dict[str, Any], bool]] = [
    ("none", {}, True),
    ("gpu name", {"gpu": "RTX 4090"}, True),
    ("gpu other", {"gpu": "A100"}, False),
    ("vram ok", {"min_vram_gb": 23.5}, True),
    ("vram is GiB of 1024 MiB", {"min_vram_gb": 24}, False),
    ("vram short", {"min_vram_gb": 48}, False),
    ("cuda substring", {"cuda": "12"}, True),
    ("cuda other", {"cuda": "11.8"}, False),
    ("models subset", {"models": ["mistral"]}, True),
    ("models missing", {"models": ["mistral", "qwen"]}, False),
    ("price under", {"max_price": 0.05}, True),
    ("price equal", {"max_price": 0.02}, True),
    ("price over", {"max_price": 0.01}, False),
    ("region same", {"region": "eu-west"}, True),
    ("region other", {"region": "us-east"}, False),
]


@pytest.mark.parametrize(("case", "constraints", "matches"), MATCHES, ids=[m[0] for m in MATCHES])
async def test_constraint_matching(
    devnet: Devnet, miner: MinerClient, case: str, constraints: dict, matches: bool
) -> None:
    await miner.register(CAPS, region="eu-west")
    job = await devnet.submit_job({"type": "echo", "data": case}, constraints)
    response = await miner.poll()
    assert response.status_code == (200 if matches else 204)
    assert devnet.jobs[job["job_id"]]["state"] == ("RUNNING" if matches else "QUEUED")


async def test_missing_price_never_matches_max_price(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register({k: v for k, v in CAPS.items() if k != "price"})
    await devnet.submit_job({"type": "echo", "data": "x"}, {"max_price": 100})
    assert (await miner.poll()).status_code == 204


async def test_fifo_skips_unmatched_jobs(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register(CAPS, concurrency=0)
    blocked = await devnet.submit_job({"type": "echo", "data": "a"}, {"gpu": "H100"})
    first = await devnet.submit_job({"type": "echo", "data": "b"})
    second = await devnet.submit_job({"type": "echo", "data": "c"})
    got = [(await miner.poll()).json()["job_id"] for _ in range(2)]
    assert got == [first["job_id"], second["job_id"]]
    assert devnet.jobs[blocked["job_id"]]["state"] == "QUEUED"


async def test_reputation_rule(
    devnet: Devnet, miner: MinerClient, other_miner: MinerClient
) -> None:
    """2026-08 holds a job back for an idle ONLINE better-reputed miner; 2026-01 does not."""
    await miner.register(CAPS)
    await other_miner.register(CAPS)
    devnet.set_reputation(other_miner.id, 5.0)
    await devnet.submit_job({"type": "echo", "data": "x"})
    expected = 204 if devnet.dialect is V08 else 200
    assert (await miner.poll()).status_code == expected
    if devnet.dialect is V08:
        await other_miner.heartbeat(0, status="OFFLINE")  # the better miner goes away
        assert (await miner.poll()).status_code == 200


@pytest.mark.parametrize("dialect", [V08])
async def test_min_reputation_constraint(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register(CAPS)
    await devnet.submit_job({"type": "echo", "data": "x"}, {"min_reputation": 2})
    assert (await miner.poll()).status_code == 204
    devnet.set_reputation(miner.id, 2.0)
    assert (await miner.poll()).status_code == 200
