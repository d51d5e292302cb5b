"""The command channel over a real redis-server: a command reaches the rig it names, once,
from the ACL user that wrote it; the ACL keeps others out; bad entries are skipped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.fleet.commands import command_stream, follow_commands, send_command
from aitbc_miner.fleet.connect import connect
from aitbc_miner.fleet.view import ACL_REFUSED, NotAllowed, fleet_key

from .conftest import RedisServer

FLEET = "farm"
LOG = logging.getLogger("aitbc_miner.fleet.test")
#: An operator: reads the fleet, writes only its own command streams (docs/fleet.md).
OPERATOR_RULES = ("%R~aitbc:fleet:* ~aitbc:fleet:*:commands:*:{user} "
                  "-@all +ping +zrange +hgetall +xrevrange +xrange +xadd")
#: A watcher: reads the fleet, commands nothing.
WATCHER_RULES = "%R~aitbc:fleet:* -@all +ping +zrange +hgetall +xrevrange +xrange"


class Rig:
    """A rig's side of the channel: what ``act`` received, and a way to wait for it."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.changed = asyncio.Condition()
        self.fail_on: str | None = None

    async def act(self, command: str, user: str) -> None:
        async with self.changed:
            self.got.append((command, user))
            self.changed.notify_all()
        if command == self.fail_on:
            raise RuntimeError("the engine refused")

    async def wait_for(self, n: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.got) >= n)


@asynccontextmanager
async def following(redis: Redis, rig_id: str, rig: Rig) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(follow_commands(redis, FLEET, rig_id, rig.act, LOG,
                                               rescan_s=0.05, block_s=0.05))
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Callable[[str], Redis]]:
    """``client(url)``: a plain client (bytes); ``client(url, fleet=True)``: the rigs' own
    (``fleet.connect``: text, no retries)."""
    made: list[Redis] = []

    def make(url: str = redis_server.url, fleet: bool = False) -> Redis:
        made.append(connect(FleetSettings(redis_url=url)) if fleet else Redis.from_url(url))
        return made[-1]

    yield make
    for each in made:
        await each.aclose()


async def test_a_command_reaches_only_the_rig_it_names(
        redis_server: RedisServer, client: Callable[..., Redis],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    alice = client(redis_server.acl_user("alice", "pw", OPERATOR_RULES.format(user="alice")))
    rig_redis = client(redis_server.url, fleet=True)
    a, b, b_sub = Rig(), Rig(), Rig()
    async with following(rig_redis, "rig-a", a), following(rig_redis, "rig-b", b), \
            following(rig_redis, "rig-b:x", b_sub):
        await send_command(alice, FLEET, "rig-b", "pause")
        await b.wait_for(1)
        await send_command(alice, FLEET, "rig-a", "drain")  # a's first command is this one
        await send_command(alice, FLEET, "rig-b:x", "undrain")
        await a.wait_for(1)
        await b_sub.wait_for(1)
    assert b.got == [("pause", "alice")]
    assert a.got == [("drain", "alice")]
    assert b_sub.got == [("undrain", "alice")]
    assert "fleet command pause from alice" in caplog.messages


async def test_the_user_comes_from_the_acl_not_the_entry(
        redis_server: RedisServer, client: Callable[..., Redis]) -> None:
    alice = client(redis_server.acl_user("alice", "pw", OPERATOR_RULES.format(user="alice")))
    watcher = client(redis_server.acl_user("watcher", "pw", WATCHER_RULES))
    b = Rig()
    async with following(client(redis_server.url), "rig-b", b):
        with pytest.raises(NotAllowed, match=ACL_REFUSED):
            await send_command(watcher, FLEET, "rig-b", "pause")
        with pytest.raises(NotAllowed, match=ACL_REFUSED):  # writing as someone else
            await send_command(alice, FLEET, "rig-b", "pause", user="bob")
        await alice.xadd(command_stream(FLEET, "rig-b", "alice"),
                         {"command": "drain", "by": "bob"})
        await b.wait_for(1)
    assert b.got == [("drain", "alice")]


async def test_each_command_acts_once_across_restarts(
        redis_server: RedisServer, client: Callable[..., Redis]) -> None:
    redis = client(redis_server.url)
    first, second = Rig(), Rig()
    async with following(redis, "rig-b", first):
        await send_command(redis, FLEET, "rig-b", "pause")
        await send_command(redis, FLEET, "rig-b", "drain")
        await first.wait_for(2)
    async with following(redis, "rig-b", second):  # the rig restarted
        await send_command(redis, FLEET, "rig-b", "resume")
        await second.wait_for(1)
    assert first.got == [("pause", "default"), ("drain", "default")]
    assert second.got == [("resume", "default")]


@pytest.mark.parametrize("fleet_client", [False, True], ids=["bytes", "connect"])
async def test_bad_entries_are_logged_and_skipped(
        redis_server: RedisServer, client: Callable[..., Redis],
        caplog: pytest.LogCaptureFixture, fleet_client: bool) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    redis = client(redis_server.url, fleet=fleet_client)
    await redis.hset(fleet_key(FLEET, "commands:rig-b:hashy"), "command", "pause")
    await redis.hset(fleet_key(FLEET, "commands-seen:rig-b"), "garbage", "not an id")
    stream = command_stream(FLEET, "rig-b", "default")
    await redis.xadd(stream, {"note": "no command"})
    await redis.xadd(stream, {"command": "reboot"})
    await redis.xadd(stream, {"command": b"\xff\xfe\x1b[2J"})
    await redis.xadd(stream, {"command": "pause"})
    await redis.xadd(stream, {"command": "drain"})
    b = Rig()
    b.fail_on = "pause"
    async with following(redis, "rig-b", b):
        await b.wait_for(2)
    assert b.got == [("pause", "default"), ("drain", "default")]
    ignored = [m for m in caplog.messages if m.startswith("fleet command ignored")]
    assert len(ignored) == 3 and all("\x1b" not in m for m in ignored)
    assert "fleet command pause from default failed: the engine refused" in caplog.messages


async def test_a_stream_that_turns_into_another_type_is_dropped(
        redis_server: RedisServer, client: Callable[..., Redis],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    redis = client(redis_server.url)
    eve = command_stream(FLEET, "rig-b", "eve")
    b = Rig()
    async with following(client(redis_server.url, fleet=True), "rig-b", b):
        await send_command(redis, FLEET, "rig-b", "pause", user="eve")
        await b.wait_for(1)
        await redis.delete(eve)
        await redis.hset(eve, "command", "drain")  # WRONGTYPE for XREAD from now on
        await send_command(redis, FLEET, "rig-b", "resume")
        await b.wait_for(2)
    assert b.got == [("pause", "eve"), ("resume", "default")]


async def test_redis_going_away_is_waited_out(
        redis_server: RedisServer, client: Callable[..., Redis],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    rig_redis = client(redis_server.url, fleet=True)
    operator = client(redis_server.url)
    b = Rig()

    async def logged(text: str) -> None:
        while not any(text in m for m in caplog.messages):
            await asyncio.sleep(0.02)

    async with following(rig_redis, "rig-b", b) as task:
        await send_command(operator, FLEET, "rig-b", "pause")
        await b.wait_for(1)
        redis_server.kill()
        await asyncio.wait_for(logged("fleet commands: Redis unreachable; retrying"), 15)
        redis_server.start()  # the same data (append-only file): pause was seen
        await asyncio.wait_for(logged("fleet commands: Redis reachable again"), 30)
        # a new operator: redis-py does not resend on a connection Redis's restart closed
        await send_command(client(redis_server.url), FLEET, "rig-b", "resume")
        await b.wait_for(2, timeout=30)
        assert not task.done()
    assert b.got == [("pause", "default"), ("resume", "default")]


def test_send_refuses_what_it_cannot_name() -> None:
    redis = Redis.from_url("redis://a:b@127.0.0.1:1/0")
    with pytest.raises(ValueError, match="unknown fleet command"):
        asyncio.run(send_command(redis, FLEET, "rig-b", "reboot"))
    with pytest.raises(ValueError, match="has a ':'"):
        asyncio.run(send_command(redis, FLEET, "rig-b", "pause", user="x:alice"))
