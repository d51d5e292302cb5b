"""``aitbc-miner fleet`` as a real process against a real redis-server: the JSON document,
a command sent from the shell, and one clear line (and exit code) when the ACL refuses,
Redis is down or not configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from .conftest import RedisServer
from .sample_rigs import FLEET, write_three_rigs

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ("%R~aitbc:fleet:* ~aitbc:fleet:*:commands:*:alice "
            "-@all +ping +zrange +hgetall +xrevrange +xrange +xadd")
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await write_three_rigs(client, now=time.time())  # the process reads with its own clock
    yield client
    await client.aclose()


@pytest.fixture
def fleet_cli(tmp_path: Path) -> Run:
    """``fleet_cli(*args, config=...)``: ``aitbc-miner [--config FILE] fleet ARGS``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_MINER_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_STATE_HOME=str(tmp_path / "state"),
               PYTHONPATH=str(ROOT))

    def run(*args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "aitbc_miner"]
        if config is not None:
            path = tmp_path / "config.yaml"
            path.write_text(config, encoding="utf-8")
            argv += ["--config", str(path)]
        return subprocess.run([*argv, "fleet", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL)

    return run


async def test_json_lists_every_rig(redis_server: RedisServer, redis: Redis,
                                    fleet_cli: Run) -> None:
    done = fleet_cli("--format", "json", "--history", "3",
                     config=f"fleet:\n  redis_url: {redis_server.url}\n  name: {FLEET}\n")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["fleet"] == FLEET and doc["redis"] == f"127.0.0.1:{redis_server.port}"
    rigs = {rig["rig"]: rig for rig in doc["rigs"]}
    assert sorted(rigs) == ["rig-a", "rig-b", "rig-c"]
    assert rigs["rig-a"]["earned_per_hour"] == "12.5000" and rigs["rig-a"]["running"] == 3
    assert rigs["rig-b"]["state"] == "paused" and rigs["rig-c"]["lease_expired"] is True
    assert len(rigs["rig-a"]["gpus"]) == 2 and rigs["rig-a"]["gpus"][0]["util_pct"] == 97
    assert [len(rig["history"]) for rig in doc["rigs"]] == [3, 3, 3]
    assert rigs["rig-a"]["history"][-1]["completed"] == 118


async def test_a_command_from_the_shell(redis_server: RedisServer, redis: Redis,
                                        fleet_cli: Run) -> None:
    alice = redis_server.acl_user("alice", "secret-pw", OPERATOR)
    done = fleet_cli("drain", "rig-b", "--redis-url", alice, "--fleet", FLEET)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "drain sent to rig rig-b of fleet farm as Redis user alice"
    entries = await redis.xrange(f"aitbc:fleet:{FLEET}:commands:rig-b:alice")
    assert [fields["command"] for _, fields in entries] == ["drain"]


async def test_the_acl_refusal_is_one_line_and_exit_2(redis_server: RedisServer,
                                                      redis: Redis, fleet_cli: Run) -> None:
    nobody = redis_server.acl_user("nobody", "secret-pw", "-@all +ping")
    watcher = redis_server.acl_user(
        "watcher", "secret-pw", "%R~aitbc:fleet:* -@all +ping +zrange +hgetall +xrevrange")
    for args in (("--format", "json", "--redis-url", nobody),
                 ("pause", "rig-b", "--redis-url", watcher)):
        done = fleet_cli(*args, "--fleet", FLEET)
        assert done.returncode == 2, done
        user = "nobody" if "nobody" in args[-1] else "watcher"
        assert done.stderr == ("aitbc-miner fleet: not allowed by the Redis ACL "
                               f"(Redis user {user})\n")
        assert "secret-pw" not in done.stdout + done.stderr
    assert await redis.xlen(f"aitbc:fleet:{FLEET}:commands:rig-b:watcher") == 0


def test_redis_down_and_no_redis(redis_server: RedisServer, fleet_cli: Run) -> None:
    url = redis_server.url
    redis_server.kill()
    done = fleet_cli("--format", "json", "--redis-url", url)
    assert done.returncode == 1
    assert done.stderr == ("aitbc-miner fleet: fleet: Redis unreachable "
                           f"(127.0.0.1:{redis_server.port})\n")
    done = fleet_cli("--format", "json")
    assert done.returncode == 2
    assert "no Redis: set fleet.redis_url" in done.stderr
    done = fleet_cli("pause")
    assert (done.returncode, done.stderr) == (2, "aitbc-miner fleet pause: name the rig\n")
