"""Fixtures: a devnet per dialect on loopback, with a fake clock, and an HTTP client on /v1."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package may not be installed in the venv
    sys.path.insert(0, str(ROOT))

from devnet_helpers import MINER_KEY, OTHER_KEY, MinerClient  # noqa: E402

from aitbc_miner.devnet import Devnet, Dialect, FakeClock  # noqa: E402


@pytest.fixture(params=[Dialect.V2026_01, Dialect.V2026_08], ids=["2026-01", "2026-08"])
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def devnet(dialect: Dialect, clock: FakeClock) -> AsyncIterator[Devnet]:
    async with Devnet(dialect, miner_keys=[MINER_KEY, OTHER_KEY], rate_limits=False,
                      clock=clock) as dn:
        yield dn


@pytest.fixture
async def http(devnet: Devnet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=devnet.api_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def miner(http: httpx.AsyncClient, devnet: Devnet) -> MinerClient:
    return MinerClient(http, devnet, "rig-1")


@pytest.fixture
def other_miner(http: httpx.AsyncClient, devnet: Devnet) -> MinerClient:
    return MinerClient(http, devnet, "rig-2", OTHER_KEY)
