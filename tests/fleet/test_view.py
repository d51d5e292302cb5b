"""The fleet view reads every rig and a rig's history from a real redis-server, and no
content of Redis can make it raise: a bad field reads as unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.fleet.connect import connect
from aitbc_miner.fleet.view import (
    ACL_REFUSED,
    FleetUnreachable,
    FleetUnreadable,
    NotAllowed,
    read_fleet,
    read_history,
)

from .conftest import RedisServer
from .sample_rigs import FLEET, NOW, key, write_three_rigs


@pytest.fixture(params=["bytes", "connect"])
async def redis(redis_server: RedisServer, request: pytest.FixtureRequest
                ) -> AsyncIterator[Redis]:
    """A plain client (bytes), and the fleet's own (``fleet.connect``: text)."""
    client = (Redis.from_url(redis_server.url) if request.param == "bytes"
              else connect(FleetSettings(redis_url=redis_server.url)))
    yield client
    await client.aclose()


async def test_reads_every_rig_with_its_heartbeat(redis: Redis) -> None:
    await write_three_rigs(redis)
    view = await read_fleet(redis, FLEET, now=NOW)
    assert [r.rig for r in view.rigs] == ["rig-a", "rig-b", "rig-c"]
    assert view.live == 2
    a, b, c = view.rigs
    assert (a.state, a.running, a.slots, a.completed, a.failed) == ("running", 3, 4, 1234, 7)
    assert a.earned == Decimal("98.7654") and a.earned_per_hour == Decimal("12.5000")
    assert a.gpus is not None and [g.util_pct for g in a.gpus] == [97, 88]
    assert a.gpus[0].name == "NVIDIA RTX 4090" and a.gpus[1].mem_total_mib == 24564
    assert a.heartbeat_age(NOW) == pytest.approx(5.0) and not a.lease_expired
    assert (b.state, b.problems, b.lease_expired) == ("paused", ("GPU 0 at 41 C, fan 0 rpm",),
                                                      False)
    assert c.lease_expired and c.heartbeat_age(NOW) == pytest.approx(150.0)
    assert all(rig.unreadable == () and rig.reported for rig in view.rigs)
    as_json = a.to_json(NOW)
    assert as_json["earned"] == "98.7654" and as_json["heartbeat_age_s"] == pytest.approx(5.0)


async def test_another_fleet_is_not_shown(redis: Redis) -> None:
    await write_three_rigs(redis, fleet="other")
    assert (await read_fleet(redis, FLEET, now=NOW)).rigs == ()


async def test_bad_fields_read_as_unknown(redis: Redis) -> None:
    await redis.zadd(key(FLEET, "rigs"), {"bad": NOW + 10, "bare": NOW + 10,
                                          "wrongtype": float("inf"), b"\xff": 1})
    await redis.hset(key(FLEET, "rig:bad"), mapping={
        "state": "run\x1b[2Jning\n", "seen": "yesterday", "slots": "-1", "running": "3.5",
        "completed": "1e3", "failed": "٣", "earned": "NaN", "earned_per_hour": "1e999999",
        "gpus": '{"index": 0}', "problems": '["disk", 7, null]', "outbox": b"\xff\xfe",
        "version": "x" * 10_000, "coordinator": "[b]http://x[/b]"})
    await redis.set(key(FLEET, "rig:wrongtype"), "not a hash")
    view = await read_fleet(redis, FLEET, now=NOW)
    bad = view.rig("bad")
    assert bad is not None
    assert bad.state == "run\ufffd[2Jning"  # a terminal escape cannot reach the screen
    assert (bad.seen, bad.slots, bad.running, bad.completed, bad.failed, bad.outbox) == (
        None, None, None, None, None, None)
    assert (bad.earned, bad.earned_per_hour, bad.gpus) == (None, None, None)
    assert bad.problems == ("disk",)
    assert set(bad.unreadable) == {"seen", "slots", "running", "completed", "failed", "earned",
                                   "earned_per_hour", "gpus", "problems", "outbox"}
    assert bad.version is not None and len(bad.version) <= 65
    bare, wrong = view.rig("bare"), view.rig("wrongtype")
    assert bare is not None and not bare.reported and bare.state is None
    assert wrong is not None and wrong.unreadable == ("lease", "hash") and wrong.lease_expired
    assert len(view.rigs) == 4  # the member that is not UTF-8 is shown, not a crash


async def test_gpu_entries_are_read_field_by_field(redis: Redis) -> None:
    await redis.zadd(key(FLEET, "rigs"), {"r": NOW + 10})
    await redis.hset(key(FLEET, "rig:r"), "gpus",
                     '[{"index": true, "name": 5, "util_pct": "97", "temp_c": 1e400,'
                     ' "power_w": 300}, {}]')
    (rig,) = (await read_fleet(redis, FLEET, now=NOW)).rigs
    assert rig.gpus is not None and len(rig.gpus) == 2
    assert (rig.gpus[0].index, rig.gpus[0].name, rig.gpus[0].util_pct, rig.gpus[0].temp_c,
            rig.gpus[0].power_w) == (None, None, None, None, 300.0)


async def test_history_oldest_first_and_tolerant(redis: Redis) -> None:
    await write_three_rigs(redis)
    history = await read_history(redis, FLEET, "rig-a")
    assert len(history) == 60
    assert [s.ts for s in history[:2]] == [NOW - 600, NOW - 590]
    assert history[-1].completed == 118 and history[-1].earned == Decimal("5.9000")
    assert [s.gpu_util_pct for s in history[:3]] == [60, 75, 90]
    assert len(await read_history(redis, FLEET, "rig-a", count=5)) == 5
    metrics = key(FLEET, "metrics:odd")
    await redis.xadd(metrics, {"gpu_util_pct": "hot", "power_w": "inf"}, id="1700000000123-0")
    (odd,) = await read_history(redis, FLEET, "odd")
    assert (odd.ts, odd.gpu_util_pct, odd.power_w) == (1700000000.123, None, None)
    assert await read_history(redis, FLEET, "nobody") == ()


async def test_keys_of_the_wrong_type(redis: Redis) -> None:
    await redis.hset(key(FLEET, "metrics:rig-a"), "ts", "1")
    assert await read_history(redis, FLEET, "rig-a") == ()
    await redis.set(key(FLEET, "rigs"), "a string")
    with pytest.raises(FleetUnreadable, match="^Redis answered: WRONGTYPE"):
        await read_fleet(redis, FLEET)


async def test_redis_down_is_unreachable(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url)
    try:
        redis_server.kill()
        with pytest.raises(FleetUnreachable, match="Redis unreachable"):
            await read_fleet(client, FLEET)
        with pytest.raises(FleetUnreachable):
            await read_history(client, FLEET, "rig-a")
    finally:
        await client.aclose()


async def test_acl_refusal_is_not_allowed(redis_server: RedisServer, redis: Redis) -> None:
    await write_three_rigs(redis)
    # may read the member set, but not the rigs' hashes
    url = redis_server.acl_user("peeker", "pw", "%R~aitbc:fleet:*:rigs -@all +zrange +hgetall")
    wrong_password = url.replace(":pw@", ":nope@")
    for bad_url in (url, wrong_password):
        client = Redis.from_url(bad_url)
        try:
            with pytest.raises(NotAllowed) as refused:
                await read_fleet(client, FLEET, now=NOW)
        finally:
            await client.aclose()
        assert str(refused.value) in (ACL_REFUSED, "Redis refused the login (user name or "
                                      "password)")
        assert "pw" not in str(refused.value) and "nope" not in str(refused.value)
