"""``aitbc-miner fleet`` in a real terminal (tmux) against a real redis-server: the command
line opens the console on every rig, and ``q`` leaves it with exit code 0."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from tests.fleet.conftest import RedisServer
from tests.fleet.conftest import redis_server as redis_server  # noqa: F401  (the fixture)
from tests.fleet.sample_rigs import FLEET, write_three_rigs
from tests.terminal import Tmux, needs_tmux, shell_command
from tests.terminal import tmux as tmux  # noqa: F401  (the fixture)


async def _three_rigs(url: str) -> None:
    client = Redis.from_url(url)
    try:
        await write_three_rigs(client, now=time.time())  # the process reads with its clock
    finally:
        await client.aclose()


@needs_tmux
def test_the_command_opens_the_console_on_every_rig(
        redis_server: RedisServer, tmux: Tmux, tmp_path: Path) -> None:
    asyncio.run(_three_rigs(redis_server.url))
    env = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_STATE_HOME": str(tmp_path / "st"),
           "PATH": os.environ.get("PATH", "")}
    rc = tmp_path / "rc"
    argv = [sys.executable, "-m", "aitbc_miner", "fleet", "--redis-url", redis_server.url,
            "--fleet", FLEET]
    tmux.start("demo", shell_command(argv, env, rc), size=(130, 34))
    screen = tmux.wait_for(lambda s: all(r in s for r in ("rig-a", "rig-b", "rig-c"))
                           and "samples" in s, 60, "three rigs and a history")
    assert "paused" in screen and "gone" in screen and "commands as default" in screen
    tmux("send-keys", "-t", "demo", "q")
    deadline = time.monotonic() + 30
    while not (rc.exists() and rc.read_text().strip()):
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.1)
    assert rc.read_text().strip() == "0"
