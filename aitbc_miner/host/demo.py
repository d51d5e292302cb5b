"""``aitbc-miner demo``: a reference coordinator, a reference Ollama, a job feeder and a
miner with SIMULATED GPUs, all on loopback.

Everything is embedded and throw-away (a temporary state folder, the devnet's default
keys, the devnet's receipt key pinned), so a newcomer sees slots fill, inference run,
receipts arrive and earnings grow with one command, and nothing touches a real
coordinator, a real GPU or the operator's own journal. Simulated GPUs say SIMULATED on
every screen and log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..codes import ExitCode
from ..config import load_settings
from ..devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from ..devnet.feeder import DEFAULT_MIX, DEMO_MIX, DEMO_MODELS, Feeder
from ..devnet.ollama import Behavior, FakeOllama
from ..engine import Engine
from .runtime import Host, build_engine, control_socket_path

DEMO_MINER_ID = "demo-rig"
# Simulated inference: ~40 tokens/s after a short "prompt eval", so a job lasts a few s.
DEMO_BEHAVIOR = Behavior(tokens=48, token_delay_s=0.025, first_token_delay_s=0.2)
DEMO_KEEP = 200  # requests and generations the demo's fakes remember


async def run_demo(
    *,
    dialect: str = Dialect.V2026_01.value,
    slots: int = 4,
    gpus: int = 2,
    queued: int = 8,
    exit_after: int | None = None,
    ui: Callable[[Engine], Awaitable[None]] | None = None,
    keep_state: Path | None = None,
    log_to: Callable[[Path, str], object] | None = None,
    log_level: str = "INFO",
    metrics: str | None = None,
) -> ExitCode:
    """Run the demo until interrupted (or until ``exit_after`` outcomes are delivered).
    ``log_to(folder, level)`` sends logs to a file there (the console owns the terminal);
    ``metrics`` (``host:port``) serves /metrics, /healthz and /readyz there."""
    root = keep_state or Path(tempfile.mkdtemp(prefix="aitbc-miner-demo-"))
    if log_to is not None:
        log_to(root / "state", log_level)
    try:
        # The coordinator keeps every job it ever handed out, as the real one does: on disk
        # here, so an all-day demo's memory stays flat; the fake Ollama and the request log
        # keep only their newest entries.
        async with Devnet(dialect, rate_limits=False, state_path=root / "coordinator.sqlite",
                          request_log_size=DEMO_KEEP) as devnet, \
                FakeOllama(list(DEMO_MODELS), default=DEMO_BEHAVIOR,
                           keep_records=DEMO_KEEP) as ollama:
            settings = load_settings(None, overrides={
                "coordinator": {"url": devnet.url, "public_key": devnet.public_key_id},
                "miner": {"id": DEMO_MINER_ID, "key": DEFAULT_MINER_KEYS[0], "price": 0.02},
                "slots": {"cpu": slots, "per_gpu": 2},
                "gpu": {"simulate": gpus},
                "inference": {"backend": "ollama" if gpus else "off", "url": ollama.url},
                "heartbeat_interval_s": 5.0,
                "paths": {"state_dir": str(root / "state"), "data_dir": str(root / "data")},
                "metrics": {"listen": metrics},
                # Made-up prices, so the money screen shows profitability.
                "earnings": {"power_price_per_kwh": "0.30", "currency": "EUR",
                             "aitbc_rate": "0.05"},
            }, env={})
            engine = await asyncio.to_thread(build_engine, settings)  # NVML probe blocks
            feeder = Feeder(devnet.url, devnet.client_headers(), target=queued, interval=0.5,
                            mix=DEMO_MIX if gpus else DEFAULT_MIX)
            host = Host(engine, drain_grace_s=settings.jobs.drain_grace_s,
                        control_socket=control_socket_path(settings),
                        metrics_address=settings.metrics.address,
                        detachable=False)  # a demo whose terminal went stops with it
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
