"""The fleet's command channel: an operator pauses, resumes, drains or undrains a rig
through Redis, and the rig knows who asked.

An operator adds an entry to the stream ``aitbc:fleet:{fleet}:commands:{rig}:{user}``,
where ``user`` is the Redis ACL user it logged in as (``send_command``). The ACL lets
each operator write only the streams whose names end in its own user name, so the rig
takes the user from the stream's name, never from the entry (a ``by`` field in it is
ignored). ACL user names used here must not contain ``:``.

The rig side (``follow_commands``) finds its command streams (SCAN, again every
``rescan_s``), reads them blocking, and calls ``act(command, user)`` once per entry.
The last entry handled of each stream is kept in the hash
``aitbc:fleet:{fleet}:commands-seen:{rig}``, so a restart (even with a new state dir)
never acts on an old command again. An unknown or malformed entry is logged and
skipped; Redis going away is logged once and waited out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import untrusted
from ..backoff import Backoff
from ..logs import log_event
from .view import as_text, fleet_key, redis_problem, talking_to_redis

if TYPE_CHECKING:  # redis is imported only where the fleet is used
    from redis.asyncio import Redis

COMMANDS = ("pause", "resume", "drain", "undrain")
STREAM_MAXLEN = 1000  # entries kept per operator and rig (approximately)
READ_COUNT = 100  # entries per read
RESCAN_S = 10.0  # how often a rig looks for new operators' streams
BLOCK_S = 2.0  # how long one blocking read waits (keep below the client's socket timeout)

_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")
_GLOB = re.compile(r"([*?\[\]\\])")

Act = Callable[[str, str], Awaitable[None]]


def command_stream(fleet: str, rig: str, user: str) -> str:
    return fleet_key(fleet, f"commands:{rig}:{user}")


def redis_user(redis: Redis) -> str:
    """The ACL user this client logs in as: the URL's user name, else ``default``."""
    name = redis.connection_pool.connection_kwargs.get("username")
    return str(name) if name else "default"


async def send_command(redis: Redis, fleet: str, rig: str, command: str, *,
                       user: str | None = None, now: float | None = None) -> str:
    """Ask ``rig`` to run ``command``; returns the stream entry's id. Raises ``NotAllowed``
    when the ACL refuses (this user may not command rigs), ``FleetUnreachable`` when Redis
    does not answer, ``ValueError`` for an unknown command or a user name with ``:``."""
    if command not in COMMANDS:
        raise ValueError(f"unknown fleet command {command!r} (one of {', '.join(COMMANDS)})")
    user = user or redis_user(redis)
    if ":" in user:
        raise ValueError(f"ACL user name {user!r} has a ':'; it cannot name a command stream")
    at = time.time() if now is None else now
    with talking_to_redis():
        entry = await redis.xadd(command_stream(fleet, rig, user),
                                 {"command": command, "at": f"{at:.3f}"},
                                 maxlen=STREAM_MAXLEN, approximate=True)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def follow_commands(redis: Redis, fleet: str, rig: str, act: Act,
                          log: logging.Logger, *, rescan_s: float = RESCAN_S,
                          block_s: float = BLOCK_S) -> None:
    """Call ``act(command, user)`` for each new command to ``rig``, until cancelled.
    Never raises (but ``CancelledError``): Redis errors are logged and retried, an
    ``act`` that raises is logged and the command counts as handled."""
    await _Follower(redis, fleet, rig, act, log, rescan_s, block_s).run()


class _Follower:
    def __init__(self, redis: Redis, fleet: str, rig: str, act: Act, log: logging.Logger,
                 rescan_s: float, block_s: float) -> None:
        self.redis, self.rig, self.act, self.log = redis, rig, act, log
        self.prefix = command_stream(fleet, rig, "")
        self.pattern = _GLOB.sub(r"\\\1", self.prefix) + "*"
        self.seen_key = fleet_key(fleet, f"commands-seen:{rig}")
        self.rescan_s, self.block_ms = rescan_s, max(1, round(min(block_s, rescan_s) * 1000))
        self.last: dict[str, str] = {}  # stream -> last entry handled; memory wins
        self.unsaved: set[str] = set()  # streams whose last id is not yet in seen_key
        self.trouble: str | None = None  # what went wrong last, said once per outage

    async def run(self) -> None:
        from redis import exceptions as redis_errors

        backoff = Backoff(base_s=0.5, cap_s=30.0)
        while True:
            stop_if_cancelled()
            try:
                await self._round()
                backoff.reset()
                self._recovered()
            except (redis_errors.RedisError, OSError) as exc:
                self._failed(exc)
                await asyncio.sleep(backoff.next_delay())

    async def _round(self) -> None:
        """Find the streams, then read them until the next rescan is due."""
        from redis import exceptions as redis_errors

        await self._discover()
        self._recovered()
        loop = asyncio.get_running_loop()
        rescan_at = loop.time() + self.rescan_s
        if not self.last:
            await asyncio.sleep(self.rescan_s)
            return
        while loop.time() < rescan_at and self.last:
            streams: dict[Any, Any] = dict(self.last)
            try:
                answer: Any = await self.redis.xread(streams, count=READ_COUNT,
                                                     block=self.block_ms)
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                await self._forget_non_streams()  # a key became something else
                continue
            stop_if_cancelled()
            for stream, entries in answer or ():
                for entry_id, fields in entries:
                    await self._handle(as_text(stream), as_text(entry_id), fields)

    async def _forget_non_streams(self) -> None:
        """Stop reading keys that are no longer streams (SCAN finds them again if they
        become streams once more)."""
        pipe = self.redis.pipeline(transaction=False)
        names = list(self.last)
        for name in names:
            pipe.type(name)
        kinds = await pipe.execute()
        for name, kind in zip(names, kinds, strict=True):
            if as_text(kind) != "stream":
                del self.last[name]
                self.unsaved.discard(name)

    async def _discover(self) -> None:
        await self._save()
        found: list[str] = []
        async for key in self.redis.scan_iter(match=self.pattern, count=500, _type="stream"):
            name = _strict_text(key)
            user = name[len(self.prefix):] if name is not None else ""
            if name is not None and name.startswith(self.prefix) and user and ":" not in user:
                found.append(name)  # with a ':' it is a rig whose id extends this one's
        new = [name for name in found if name not in self.last]
        if not new:
            return
        seen = await self.redis.hmget(self.seen_key, new)
        for name, stored in zip(new, seen, strict=True):
            last = as_text(stored) if stored is not None else ""
            self.last[name] = last if _ENTRY_ID.fullmatch(last) else "0-0"

    async def _handle(self, stream: str, entry_id: str, raw: Any) -> None:
        user = stream[len(self.prefix):]
        fields = {as_text(k): as_text(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        command = fields.get("command", "")
        shown_user = untrusted.scrub(user, max_chars=64)
        if command in COMMANDS:
            log_event(self.log, logging.INFO, "fleet_command",
                      f"fleet command {command} from {shown_user}", command=command,
                      user=shown_user, rig=self.rig, entry=entry_id)
            try:
                await self.act(command, user)
            except Exception as exc:  # the engine said no: logged, never retried
                log_event(self.log, logging.ERROR, "fleet_command_failed",
                          f"fleet command {command} from {shown_user} failed: {exc}",
                          command=command, user=shown_user, rig=self.rig, entry=entry_id)
        else:
            what = untrusted.scrub(command, max_chars=40) if command else "no command field"
            log_event(self.log, logging.WARNING, "fleet_command_ignored",
                      f"fleet command ignored from {shown_user}: {what!r} is not one of "
                      f"{', '.join(COMMANDS)}", user=shown_user, rig=self.rig, entry=entry_id)
        self.last[stream] = entry_id
        self.unsaved.add(stream)
        await self._save()

    async def _save(self) -> None:
        if self.unsaved:
            await self.redis.hset(self.seen_key,
                                  mapping={name: self.last[name] for name in self.unsaved})
            self.unsaved.clear()

    def _failed(self, exc: BaseException) -> None:
        mapped = redis_problem(exc)
        with_redis = str(mapped) if mapped else untrusted.scrub(f"Redis error: {exc}",
                                                              max_chars=200)
        if with_redis != self.trouble:
            self.trouble = with_redis
            log_event(self.log, logging.WARNING, "fleet_commands_unavailable",
                      f"fleet commands: {with_redis}; retrying", rig=self.rig)

    def _recovered(self) -> None:
        if self.trouble is not None:
            self.trouble = None
            log_event(self.log, logging.INFO, "fleet_commands_available",
                      "fleet commands: Redis reachable again", rig=self.rig)


def stop_if_cancelled() -> None:
    """redis-py (seen with 8.1 on Python 3.11; redis/redis-py#2028) can swallow a
    cancellation that lands while a blocking read times out, and return as if nothing
    happened (or as a Redis timeout): a cancelled loop must stop all the same."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _strict_text(value: Any) -> str | None:
    """A key name as text, or None when it is not UTF-8 (it could not be named back)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)
