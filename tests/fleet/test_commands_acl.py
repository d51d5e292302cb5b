"""The ACL lines docs/fleet.md gives, run as written against a real redis-server: an operator
commands rigs only in its own name, a watcher only watches, and a rig's user, as the page
describes it, follows its commands but cannot write one."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.fleet.commands import command_stream, follow_commands, send_command
from aitbc_miner.fleet.connect import connect
from aitbc_miner.fleet.view import NotAllowed, read_fleet

from .conftest import RedisServer
from .sample_rigs import FLEET, NOW, write_three_rigs

DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"


def documented() -> tuple[list[list[str]], str]:
    """The ``ACL SETUSER`` lines of the page, and the rig's command-channel rules."""
    text = DOC.read_text(encoding="utf-8")
    lines = [line.split() for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    rig = re.search(r"`(%R~aitbc:fleet:farm:commands:\*[^`]*)`", text)
    assert lines and rig, "docs/fleet.md lost its ACL lines"
    return lines, rig.group(1)


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[Callable[[str, str], Redis]]:
    lines, rig_rules = documented()
    for line in lines:
        redis_server.cli(*line)
    redis_server.acl_user("rig-b", "rig-password", rig_rules + " +ping")
    made: list[Redis] = []

    def login(user: str, password: str) -> Redis:
        url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
        made.append(connect(FleetSettings(redis_url=url, name=FLEET)))
        return made[-1]

    writer = Redis.from_url(redis_server.url)
    made.append(writer)
    await write_three_rigs(writer)
    yield login
    for client in made:
        await client.aclose()


async def test_the_documented_acl(clients: Callable[[str, str], Redis]) -> None:
    assert FLEET == "farm"  # the page's example fleet
    alice = clients("alice", "alice-password")
    watcher = clients("watcher", "watcher-password")
    rig = clients("rig-b", "rig-password")
    got: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    async def act(command: str, user: str) -> None:
        got.append((command, user))
        arrived.set()

    follower = asyncio.create_task(follow_commands(
        rig, FLEET, "rig-b", act, logging.getLogger("aitbc_miner.fleet.test"),
        rescan_s=0.05, block_s=0.05))
    try:
        for who in (alice, watcher):  # both see the fleet
            assert [r.rig for r in (await read_fleet(who, FLEET, now=NOW)).rigs] == [
                "rig-a", "rig-b", "rig-c"]
        with pytest.raises(NotAllowed):
            await send_command(watcher, FLEET, "rig-b", "pause")
        with pytest.raises(NotAllowed):
            await send_command(alice, FLEET, "rig-b", "pause", user="bob")
        with pytest.raises(NotAllowed):  # nor a rig's user, in anybody's name
            await send_command(rig, FLEET, "rig-b", "pause", user="rig-b")
        with pytest.raises(redis_errors.NoPermissionError):
            await alice.hset(f"aitbc:fleet:{FLEET}:rig:rig-b", "state", "running")
        with pytest.raises(NotAllowed):  # another fleet
            await send_command(alice, "other", "rig-b", "pause")
        await send_command(alice, FLEET, "rig-b", "drain")
        async with asyncio.timeout(15):
            await arrived.wait()
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    assert got == [("drain", "alice")]
    assert len(await alice.xrange(command_stream(FLEET, "rig-b", "alice"))) == 1
