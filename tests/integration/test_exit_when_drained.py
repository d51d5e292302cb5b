"""``--exit-when-drained``: a drain from any source (the console, not only a signal) ends the run.

In headless mode every drain comes from a signal, which always exits, so the flag shows
only when something else drains the engine. This drives the same ``build_engine`` and
``Host`` the CLI uses, in-process, against a loopback devnet, and drains as the console does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aitbc_miner.codes import ExitCode
from aitbc_miner.config import load_settings
from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet
from aitbc_miner.engine import Engine, Link, Mode
from aitbc_miner.host.cli import build_parser
from aitbc_miner.host.runtime import Host, build_engine

pytestmark = pytest.mark.timeout(30)


def engine_for(devnet: Devnet, root: Path, *, exit_when_drained: bool) -> Engine:
    settings = load_settings(None, overrides={
        "coordinator": {"url": devnet.url, "public_key": devnet.public_key_id},
        "miner": {"id": "rig-drain", "key": DEFAULT_MINER_KEYS[0]},
        "slots": {"cpu": 1, "gpu": 0},
        "heartbeat_interval_s": 1.0,
        "poll": {"min_interval_s": 0.05, "max_interval_s": 0.2},
        "paths": {"state_dir": str(root / "state"), "data_dir": str(root / "data")},
    }, env={})
    return build_engine(settings, exit_when_drained=exit_when_drained)


def test_the_cli_accepts_exit_when_drained() -> None:
    # Given / When the flag is given, Then the parser keeps it for build_engine
    assert build_parser().parse_args(["--headless", "--exit-when-drained"]).exit_when_drained


async def test_with_exit_when_drained_a_console_drain_ends_the_run_after_the_job(
    tmp_path: Path,
) -> None:
    async with Devnet("2026-08", rate_limits=False) as devnet:
        # Given a miner built with exit_when_drained, running a job
        engine = engine_for(devnet, tmp_path, exit_when_drained=True)
        host = Host(engine, drain_grace_s=30)
        run = asyncio.create_task(host.run(signals=False))
        try:
            await engine.wait_until(lambda s: s.connection.link is Link.REGISTERED, timeout=10)
            job = await devnet.submit_job({"type": "sleep", "seconds": 0.5})
            await engine.wait_until(lambda s: s.running == 1, timeout=10)

            # When it is drained the way the console drains (no exit request)
            engine.drain()

            # Then the run ends by itself with exit code 0, after delivering the job
            assert await asyncio.wait_for(run, timeout=15) == ExitCode.OK
            assert devnet.jobs[job["job_id"]]["state"] == "COMPLETED"
            assert engine.snapshot().counters.delivered == 1
        finally:
            if not run.done():
                engine.stop(cancel_running=True)
                await asyncio.wait_for(run, timeout=15)


async def test_without_exit_when_drained_a_drained_miner_stays_up(tmp_path: Path) -> None:
    async with Devnet("2026-01", rate_limits=False) as devnet:
        # Given a miner built without the flag
        engine = engine_for(devnet, tmp_path, exit_when_drained=False)
        host = Host(engine, drain_grace_s=30)
        run = asyncio.create_task(host.run(signals=False))
        try:
            await engine.wait_until(lambda s: s.connection.link is Link.REGISTERED, timeout=10)
            # When it is drained with nothing running
            engine.drain()
            drained = await engine.wait_until(lambda s: s.mode is Mode.DRAINED, timeout=10)
            # Then it keeps its session (another heartbeat goes out) and keeps running
            beat = drained.connection.last_heartbeat_at or 0.0
            await engine.wait_until(
                lambda s: (s.connection.last_heartbeat_at or 0.0) > beat, timeout=10)
            assert not run.done()
        finally:
            engine.stop()
            assert await asyncio.wait_for(run, timeout=15) == ExitCode.OK
