"""End to end: two real engines in a fleet (each with its FleetRig, against the reference
coordinator and a real redis-server), and the fleet console. Pausing rig B from the
console pauses rig B's engine, not rig A's; rig B logs who asked; the console then shows B
paused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.snapshot import Mode
from aitbc_miner.fleet.connect import connect
from aitbc_miner.host.fleetcmd import RedisFleet
from tests.fleet.conftest import RedisServer
from tests.fleet.conftest import redis_server as redis_server  # noqa: F401  (the fixture)
from tests.fleet.test_rig import FLEET, KEYS, Rig
from tui.fleet import FleetConsole

from .conftest import RICH_TERMINAL, screen_text, until

OPERATOR = ("%R~aitbc:fleet:* ~aitbc:fleet:*:commands:*:alice "
            "-@all +ping +zrange +hgetall +xrevrange +xrange +xadd")


def rig_line(app: FleetConsole, rig: str) -> str:
    return next((line for line in screen_text(app).splitlines() if f" {rig} " in line), "")


async def test_pause_from_the_console_pauses_that_rigs_engine(
        tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aitbc_miner")
    async with Devnet(Dialect.V2026_01, rate_limits=False, miner_keys=KEYS) as devnet:
        a = Rig(tmp_path, devnet, "rig-a", KEYS[0], redis_server.url)
        b = Rig(tmp_path, devnet, "rig-b", KEYS[1], redis_server.url)
        alice: Redis | None = None
        try:
            for rig in (a, b):
                await rig.engine.wait_until(
                    lambda s: s.fleet.state == "joined" and s.mode is Mode.RUNNING, timeout=30)
            alice = connect(FleetSettings(
                redis_url=redis_server.acl_user("alice", "pw", OPERATOR), name=FLEET))
            app = FleetConsole(RedisFleet(alice, FLEET, "redis.test:6379"), refresh_s=0.2,
                               environ=RICH_TERMINAL)
            async with app.run_test(size=(140, 36)) as pilot:
                await until(pilot, lambda: "running" in rig_line(app, "rig-a")
                            and "running" in rig_line(app, "rig-b"), timeout=30,
                            what="both rigs' heartbeats")
                await pilot.press("down")
                await until(pilot, lambda: app.rigs.selected_rig == "rig-b")
                await pilot.press("p")
                await until(pilot, lambda: "Pause rig rig-b?" in screen_text(app))
                await pilot.press("y")
                await b.engine.wait_until(lambda s: s.mode is Mode.PAUSED, timeout=30)
                # the rig's next heartbeat carries it back to the console
                await until(pilot, lambda: "paused" in rig_line(app, "rig-b"), timeout=30,
                            what="rig-b shown paused")
                assert a.engine.snapshot().mode is Mode.RUNNING
                assert "running" in rig_line(app, "rig-a")
                assert caplog.messages.count("fleet command pause from alice") == 1
        finally:
            if alice is not None:
                await alice.aclose()
            await a.stop()
            await b.stop()
