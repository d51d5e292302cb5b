"""``aitbc-miner fleet``: every rig of a fleet, read from Redis (docs/fleet.md).

- ``aitbc-miner fleet``: the fleet console (``tui.fleet``), refreshed every ``--refresh``
  seconds; keys pause, resume, drain and undrain the selected rig through Redis.
- ``aitbc-miner fleet --format json``: one JSON document (``--history N`` adds each rig's
  last N metrics samples).
- ``aitbc-miner fleet pause|resume|drain|undrain RIG``: send one command and exit.

Redis is ``fleet.redis_url`` (or ``--redis-url``), the fleet ``fleet.name`` (or
``--fleet``). Exit codes: 0; 1 Redis unreachable; 2 no Redis configured, a usage error,
or the Redis ACL (or login) refuses this client, said in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..codes import ExitCode
from ..config import ConfigError, Settings
from ..config.model import FleetSettings
from ..fleet.commands import COMMANDS, redis_user, send_command
from ..fleet.view import (
    FleetError,
    FleetUnreachable,
    FleetView,
    MetricsSample,
    NotAllowed,
    read_fleet,
    read_history,
)

if TYPE_CHECKING:  # redis is imported only when the command runs
    from redis.asyncio import Redis

PROG = "aitbc-miner fleet"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    fleet: argparse.ArgumentParser = sub.add_parser(
        "fleet", help="every rig of the fleet, from Redis: console, --format json, or a command")
    fleet.add_argument("action", nargs="?", choices=COMMANDS,
                       help="send this command to RIG through Redis, then exit")
    fleet.add_argument("rig", nargs="?", help="the rig the command is for")
    fleet.add_argument("--format", choices=["console", "json"], default="console",
                       type=lambda v: "console" if v.lower() in ("text", "table") else v.lower(),
                       help="console (default; text and table mean it too) or one JSON "
                       "document")
    fleet.add_argument("--history", type=int, default=0, metavar="N",
                       help="with --format json: each rig's last N metrics samples")
    fleet.add_argument("--redis-url", metavar="URL",
                       help="Redis to read (overrides fleet.redis_url)")
    fleet.add_argument("--fleet", metavar="NAME", help="fleet name (overrides fleet.name)")
    fleet.add_argument("--refresh", type=float, default=2.0, metavar="SECONDS",
                       help="console: read the fleet again this often (default 2)")
    return fleet


class RedisFleet:
    """The fleet console's source: the fleet view and the command channel on one client."""

    def __init__(self, redis: Redis, fleet: str, where: str) -> None:
        self.redis, self.fleet, self.where = redis, fleet, where
        self.user = redis_user(redis)

    async def read(self, now: float | None = None) -> FleetView:
        return await read_fleet(self.redis, self.fleet, now=now)

    async def history(self, rig: str, count: int | None = None) -> tuple[MetricsSample, ...]:
        if count is None:
            return await read_history(self.redis, self.fleet, rig)
        return await read_history(self.redis, self.fleet, rig, count=count)

    async def send(self, rig: str, command: str) -> str:
        return await send_command(self.redis, self.fleet, rig, command, user=self.user)


def where(redis: Redis, settings: FleetSettings) -> str:
    """Redis's address for the operator's eyes: never the user's password."""
    if settings.sentinel:
        return f"sentinel {settings.sentinel_service} via {', '.join(settings.sentinel)}"
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def fleet_settings(settings: Settings, args: argparse.Namespace) -> FleetSettings:
    data = settings.fleet.model_dump()
    if args.redis_url:
        data["redis_url"] = args.redis_url
    if args.fleet:
        data["name"] = args.fleet
    try:
        return FleetSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"fleet.{field}: {first['msg']}") from None


def run(args: argparse.Namespace, load: Callable[[], Settings],
        say: Callable[[str, int], int]) -> int:
    """The command; ``say(line, code)`` prints an operator error and returns ``code``."""
    if args.action and not args.rig:
        return say(f"{PROG} {args.action}: name the rig", ExitCode.CONFIG)
    if args.rig and not args.action:
        return say(f"{PROG}: {args.rig!r} is no command (one of {', '.join(COMMANDS)})",
                   ExitCode.CONFIG)
    if not args.action and args.format == "console" and not sys.stdout.isatty():
        return say(f"{PROG}: the console needs a terminal; use --format json", ExitCode.CONFIG)
    settings = fleet_settings(load(), args)
    if settings.redis_url is None:
        return say(f"{PROG}: no Redis: set fleet.redis_url in the config or give --redis-url",
                   ExitCode.CONFIG)
    return asyncio.run(_run(args, settings, say))


async def _run(args: argparse.Namespace, settings: FleetSettings,
               say: Callable[[str, int], int]) -> int:
    from ..fleet.connect import connect

    redis = connect(settings)
    source = RedisFleet(redis, settings.name, where(redis, settings))
    try:
        if args.action:
            await source.send(args.rig, args.action)
            print(f"{args.action} sent to rig {args.rig} of fleet {settings.name} "
                  f"as Redis user {source.user}")
        elif args.format == "json":
            print(json.dumps(await _document(source, args.history), indent=2))
        else:
            await _console(source, args)
    except NotAllowed as exc:
        return say(f"{PROG}: {exc} (Redis user {source.user})", ExitCode.CONFIG)
    except FleetError as exc:  # unreachable, or an error answered
        return say(f"{PROG}: fleet: {exc} ({source.where})", ExitCode.FATAL)
    finally:
        await redis.aclose()
    return ExitCode.OK


async def _document(source: RedisFleet, history: int) -> dict[str, Any]:
    view = await source.read()
    doc = view.to_json()
    doc["redis"] = source.where
    if history > 0:
        for rig in doc["rigs"]:
            samples = await source.history(rig["rig"], count=history)
            rig["history"] = [sample.to_json() for sample in samples]
    return doc


async def _console(source: RedisFleet, args: argparse.Namespace) -> None:
    """The console; an ACL that refuses reading ends it before it starts (Redis being down
    does not: the console says so and reads again)."""
    try:
        await source.read()
    except FleetUnreachable:
        pass
    from tui.fleet import FleetConsole

    await FleetConsole(source, theme=args.theme, refresh_s=max(0.2, args.refresh)).run_async()
