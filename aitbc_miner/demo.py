"""``aitbc-miner demo``: the reference coordinator, a job feeder and a miner, on loopback.

Everything is embedded and throw-away (a temporary state folder, the devnet's default
keys, the devnet's receipt key pinned), so a newcomer sees jobs flow with one command
and nothing touches a real coordinator or the operator's own journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from .codes import ExitCode
from .config import load_settings
from .devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from .devnet.feeder import Feeder
from .engine import Engine
from .runtime import Host, build_engine

DEMO_MINER_ID = "demo-rig"


async def run_demo(
    *,
    dialect: str = Dialect.V2026_01.value,
    slots: int = 4,
    queued: int = 8,
    exit_after: int | None = None,
    ui: Callable[[Engine], Awaitable[None]] | None = None,
    keep_state: Path | None = None,
) -> ExitCode:
    """Run the demo until interrupted (or until ``exit_after`` outcomes are delivered)."""
    root = keep_state or Path(tempfile.mkdtemp(prefix="aitbc-miner-demo-"))
    try:
        async with Devnet(dialect, rate_limits=False) as devnet:
            settings = load_settings(None, overrides={
                "coordinator": {"url": devnet.url, "public_key": devnet.public_key_id},
                "miner": {"id": DEMO_MINER_ID, "key": DEFAULT_MINER_KEYS[0]},
                "slots": {"cpu": slots, "gpu": 0},
                "heartbeat_interval_s": 5.0,
                "paths": {"state_dir": str(root / "state"), "data_dir": str(root / "data")},
            }, env={})
            engine = build_engine(settings)
            feeder = Feeder(devnet.url, devnet.client_headers(), target=queued, interval=0.5)
            host = Host(engine, drain_grace_s=settings.jobs.drain_grace_s)
            async with asyncio.TaskGroup() as tg:
                feeding = tg.create_task(feeder.run(), name="feeder")
                stopper = tg.create_task(_stop_after(engine, exit_after), name="exit-after")
                code = await host.run(ui)
                feeding.cancel()
                stopper.cancel()
            return code
    finally:
        if keep_state is None:
            shutil.rmtree(root, ignore_errors=True)


async def _stop_after(engine: Engine, delivered: int | None) -> None:
    if delivered is None:
        return
    with contextlib.suppress(TimeoutError):
        await engine.wait_until(lambda s: s.counters.delivered >= delivered, timeout=None)
    engine.drain(exit_when_drained=True)
