"""Shared fixtures: a reference coordinator per dialect on loopback, and engines against it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.engine import Engine, SlotPool, Tuning
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.builtin import BuiltinRunner

MINER_KEY = DEFAULT_MINER_KEYS[0]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's environment leaks into a test (config, console colours)."""
    import os

    for name in list(os.environ):
        if name.startswith("AITBC_MINER_"):
            monkeypatch.delenv(name)
    for name in ("NO_COLOR", "TEXTUAL_THEME", "TEXTUAL_COLOR_SYSTEM", "TEXTUAL_ANIMATIONS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=[Dialect.V2026_01, Dialect.V2026_08], ids=["2026-01", "2026-08"])
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return request.param


@pytest.fixture
async def devnet(dialect: Dialect) -> AsyncIterator[Devnet]:
    """The reference coordinator, rate limits off (tests that want 429s inject them)."""
    async with Devnet(dialect, rate_limits=False) as coordinator:
        yield coordinator


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine(tmp_path: Path) -> EngineFactory:
    """Build an Engine against a coordinator URL; state under tmp_path (reused per name)."""

    def factory(
        url: str,
        *,
        cpu: int = 2,
        gpu: int = 0,
        name: str = "miner",
        miner_id: str = "rig-test",
        pinned_key: str | None = None,
        registry: RunnerRegistry | None = None,
        **tuning: Any,
    ) -> Engine:
        tuning.setdefault("heartbeat_interval_s", 5.0)
        tuning.setdefault("poll_min_s", 0.05)
        tuning.setdefault("poll_max_s", 0.5)
        return Engine(
            Tuning(miner_id=miner_id, coordinator_url=url, pinned_key=pinned_key, **tuning),
            miner_key=MINER_KEY,
            journal_path=tmp_path / name / "journal.sqlite3",
            workspace_root=tmp_path / name / "jobs",
            pool=SlotPool.from_counts(cpu=cpu, gpu=gpu),
            registry=registry or RunnerRegistry([BuiltinRunner()]),
            connect_timeout_s=1.0,
            read_timeout_s=2.0,
            seed=7,
        )

    return factory


class Running:
    """An engine running in a background task; ``stop()`` waits for a clean exit."""

    def __init__(self, engine: Engine) -> None:
        import asyncio

        self.engine = engine
        self.task = asyncio.get_running_loop().create_task(engine.run(), name="engine-under-test")

    async def stop(self, *, cancel_running: bool = False, timeout: float = 30.0) -> None:
        import asyncio

        if not self.task.done():
            self.engine.stop(cancel_running=cancel_running)
        async with asyncio.timeout(timeout):
            await self.task


@pytest.fixture
async def run_engine() -> AsyncIterator[Callable[[Engine], Running]]:
    """Start engines; any still running at the end of the test are stopped and awaited."""
    started: list[Running] = []

    def start(engine: Engine) -> Running:
        running = Running(engine)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(cancel_running=True)


# --- helpers for the engine behaviour suites (added; the fixtures above are unchanged) ---


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """Wait for devnet-side state that has no event: re-check ``predicate`` until it holds.

    Only for coordinator state (the engine has ``wait_until``); bounded by ``timeout``.
    """
    import asyncio

    async def wait(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}") from None

    return wait


@pytest.fixture
def read_journal() -> Callable[[Engine], Any]:
    """Read an engine's journal through a second connection (works while it runs, or after)."""
    from aitbc_miner.journal import Journal

    async def read(engine: Engine) -> tuple[dict[str, Any], list[Any]]:
        journal = await Journal.open(engine._journal_path)
        try:
            jobs = {r.job_id: r for r in await journal.jobs()}
            return jobs, await journal.receipts()
        finally:
            await journal.close()

    return read


def coordinator_miner_id(devnet: Devnet, miner_id: str = "rig-test") -> str:
    """The identity the devnet gives a test engine: the key on 2026-01, X-Miner-ID on 2026-08."""
    return MINER_KEY if devnet.dialect is Dialect.V2026_01 else miner_id


@pytest.fixture
def miner_at() -> Callable[..., dict[str, Any]]:
    """The devnet's row for a test engine's miner (``miner_at(devnet)["inflight"]``)."""

    def row(devnet: Devnet, miner_id: str = "rig-test") -> dict[str, Any]:
        return devnet.miners[coordinator_miner_id(devnet, miner_id)]

    return row
