"""The fleet console over a real redis-server holding three rigs (tests/fleet/sample_rigs.py):
every rig shown, a rig's history on selection, commands that reach the selected rig and
only it, the ACL's refusal, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.fleet.commands import follow_commands
from aitbc_miner.fleet.connect import connect
from aitbc_miner.host.fleetcmd import RedisFleet
from tests.fleet.conftest import RedisServer
from tests.fleet.conftest import redis_server as redis_server  # noqa: F401  (the fixture)
from tests.fleet.sample_rigs import FLEET, NOW, write_three_rigs
from tui.fleet import FleetConsole, RigPanel, RigsTable

from .conftest import RICH_TERMINAL, screen_text, screenshot, until

OPERATOR = ("%R~aitbc:fleet:* ~aitbc:fleet:*:commands:*:alice "
            "-@all +ping +zrange +hgetall +xrevrange +xrange +xadd")
WATCHER = "%R~aitbc:fleet:* -@all +ping +zrange +hgetall +xrevrange +xrange"


@pytest.fixture
async def fleet(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisFleet]]:
    """Three rigs written; ``fleet(url)`` is a console source logged in by ``url``."""
    made: list[Redis] = []
    writer = Redis.from_url(redis_server.url)
    made.append(writer)
    await write_three_rigs(writer)

    def source(url: str = redis_server.url) -> RedisFleet:
        made.append(connect(FleetSettings(redis_url=url, name=FLEET)))
        return RedisFleet(made[-1], FLEET, where="redis.test:6379")

    yield source
    for client in made:
        await client.aclose()


def console(source: RedisFleet, **kwargs: Any) -> FleetConsole:
    kwargs.setdefault("clock", lambda: NOW)
    kwargs.setdefault("environ", RICH_TERMINAL)
    return FleetConsole(source, **kwargs)


def rows(app: FleetConsole) -> list[str]:
    table = app.query_one(RigsTable)
    return [str(key.value) for key in table.rows]


async def shown(pilot: Any, app: FleetConsole, *texts: str, rigs: int = 3) -> str:
    """Wait until the three rigs are read, the screen shows ``texts`` (every rig's row and
    the history by default) and the same screen is drawn twice in a row (layout done)."""
    await until(pilot, lambda: len(rows(app)) == rigs and app.history_rig is not None)
    wanted = texts or ("rig-a", "rig-b", "rig-c", "Outbox")
    await until(pilot, lambda: all(t in screen_text(app) for t in wanted), what=str(wanted))
    previous = ""
    while (text := screen_text(app)) != previous:
        previous = text
        await pilot.pause(0.05)
    return text


async def test_every_rig_side_by_side(fleet: Callable[..., RedisFleet]) -> None:
    app = console(fleet(), refresh_s=None)
    async with app.run_test(size=(140, 36)) as pilot:
        text = await shown(pilot, app)
        for needed in ("rig-a", "rig-b", "rig-c", "running", "paused", "gone",
                       "2 GPU 92 % 782 W", "3/4", "1,234", "12.5000", "5 s ago", "2m30s ago",
                       "GPU 0 at 41 C, fan 0 rpm", "commands as default", "2 live, 1 gone"):
            assert needed in text, needed
        history = app.query_one(RigPanel)  # the first rig's history is shown at once
        assert app.history_rig == "rig-a" and "rig-a: 60 samples" in str(history.border_title)


async def test_snapshot_three_rigs(fleet: Callable[..., RedisFleet], svg_snapshot: Any) -> None:
    app = console(fleet(), refresh_s=None)
    async with app.run_test(size=(130, 34)) as pilot:
        await shown(pilot, app)
        assert svg_snapshot == await screenshot(pilot)


async def test_selecting_a_rig_shows_its_history(fleet: Callable[..., RedisFleet]) -> None:
    app = console(fleet(), refresh_s=None)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3)
        await pilot.press("down", "down")
        await until(pilot, lambda: app.history_rig == "rig-c", what="rig-c's history")
        assert "rig-c: 30 samples over 4m50s" in str(app.query_one(RigPanel).border_title)
        assert "GPU util" in screen_text(app) and "100 %" in screen_text(app)


async def test_bad_content_shows_as_unknown(redis_server: RedisServer,
                                             fleet: Callable[..., RedisFleet]) -> None:
    writer = Redis.from_url(redis_server.url)
    try:
        await writer.zadd(f"aitbc:fleet:{FLEET}:rigs", {"rig-\x1b[31mx": NOW + 10})
        await writer.hset(f"aitbc:fleet:{FLEET}:rig:rig-\x1b[31mx", mapping={
            "state": "[b]running[/b]", "seen": "soon", "running": "-3", "slots": "2",
            "gpus": "[{]", "problems": '["[red]disk[/red] full"]', "earned_per_hour": "NaN",
            "completed": b"\xff"})
        await writer.xadd(f"aitbc:fleet:{FLEET}:metrics:rig-\x1b[31mx",
                          {"gpu_util_pct": "hot", "power_w": "12"})
    finally:
        await writer.aclose()
    app = console(fleet(), refresh_s=None)
    async with app.run_test(size=(140, 36)) as pilot:
        text = await shown(pilot, app, "rig-\ufffd[31mx", "not understood: ", rigs=4)
        line = next(row for row in text.splitlines() if "rig-\ufffd" in row)
        assert "[b]runnin" in line and "?/2" in line and "[red]disk[/red] full" in line
        assert "never" in line  # no heartbeat time that can be read
        assert "not understood: seen, running, completed, earned_per_hour, gpus" in text
        assert "\x1b" not in text


class Rig:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def act(self, command: str, user: str) -> None:
        self.got.append((command, user))
        self.changed.set()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(15):
            while len(self.got) < n:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def rigs_following(url: str, *names: str) -> AsyncIterator[dict[str, Rig]]:
    """Each rig's own command follower (the rig side of the channel), on its own client."""
    client = connect(FleetSettings(redis_url=url))
    rigs = {name: Rig() for name in names}
    log = logging.getLogger("aitbc_miner.fleet.test")
    tasks = [asyncio.create_task(follow_commands(client, FLEET, name, rig.act, log,
                                                 rescan_s=0.05, block_s=0.05))
             for name, rig in rigs.items()]
    try:
        yield rigs
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()


async def test_pause_through_the_console_reaches_the_selected_rig(
        redis_server: RedisServer, fleet: Callable[..., RedisFleet]) -> None:
    alice = fleet(redis_server.acl_user("alice", "pw", OPERATOR))
    app = console(alice, refresh_s=None)
    async with rigs_following(redis_server.url, "rig-a", "rig-b") as rigs, \
            app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3)
        await pilot.press("down")  # rig-b
        await until(pilot, lambda: app.rigs.selected_rig == "rig-b")
        await pilot.press("p")
        await until(pilot, lambda: "Pause rig rig-b?" in screen_text(app), what="the confirm")
        assert "as alice" in screen_text(app)
        await pilot.press("y")
        await rigs["rig-b"].wait_for(1)
        # rig-a's first command is the next one: it never saw rig-b's pause
        await pilot.press("up", "d")
        await until(pilot, lambda: "Drain rig rig-a?" in screen_text(app))
        await pilot.press("y")
        await rigs["rig-a"].wait_for(1)
        assert rigs["rig-b"].got == [("pause", "alice")]
        assert rigs["rig-a"].got == [("drain", "alice")]
        assert app.sent == [("rig-b", "pause"), ("rig-a", "drain")]


async def test_declining_sends_nothing(redis_server: RedisServer,
                                       fleet: Callable[..., RedisFleet]) -> None:
    app = console(fleet(), refresh_s=None)
    async with rigs_following(redis_server.url, "rig-a") as rigs, \
            app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3)
        await pilot.press("p")
        await until(pilot, lambda: "Pause rig rig-a?" in screen_text(app))
        await pilot.press("n", "r")
        await until(pilot, lambda: "Resume rig rig-a?" in screen_text(app))
        await pilot.press("y")
        await rigs["rig-a"].wait_for(1)
        assert rigs["rig-a"].got == [("resume", "default")]


async def test_a_user_the_acl_does_not_allow_is_refused(
        redis_server: RedisServer, fleet: Callable[..., RedisFleet]) -> None:
    watcher = fleet(redis_server.acl_user("watcher", "pw", WATCHER))
    app = console(watcher, refresh_s=None)
    async with rigs_following(redis_server.url, "rig-b") as rigs, \
            app.run_test(size=(140, 36), notifications=True) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3)
        await pilot.press("down", "p")
        await until(pilot, lambda: "Pause rig rig-b?" in screen_text(app))
        await pilot.press("y")
        await until(pilot, lambda: "not allowed by the Redis ACL" in screen_text(app),
                    what="the refusal")
        assert app.sent == []
        # rig-b's first command is this one: the watcher's pause never reached it
        await fleet().send("rig-b", "undrain")
        await rigs["rig-b"].wait_for(1)
        assert rigs["rig-b"].got == [("undrain", "default")]


async def test_redis_down_is_said_and_the_console_reconnects(
        redis_server: RedisServer, fleet: Callable[..., RedisFleet]) -> None:
    app = console(fleet(), refresh_s=0.1)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3)
        redis_server.kill()
        await until(pilot, lambda: "fleet: Redis unreachable" in screen_text(app),
                    timeout=20, what="the unreachable line")
        assert len(rows(app)) == 3  # the last rows stay, marked old
        assert app.rigs.has_class("stale")
        redis_server.start()
        await until(pilot, lambda: app.problem is None, timeout=30, what="reconnected")
        assert "Redis unreachable" not in screen_text(app) and not app.rigs.has_class("stale")
