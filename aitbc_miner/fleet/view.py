"""The fleet as an operator reads it from Redis: every rig's last heartbeat, and a rig's
metrics history (the keys: docs/fleet.md).

Everything in Redis is outside input: another rig's version, a hand-edited key, a
half-written hash. Each field is read on its own; one that is missing reads as unknown
(``None``), one that is present but not understood also reads as unknown and is named in
``RigView.unreadable``. Nothing read here can raise past ``read_fleet`` and
``read_history`` except a ``FleetError``: Redis unreachable, the ACL refusing, or Redis
answering an error (the fleet's member set is not a sorted set).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

from .. import untrusted

if TYPE_CHECKING:  # redis is imported only where the fleet is used
    from redis.asyncio import Redis

T = TypeVar("T")
KEY_ROOT = "aitbc:fleet:"
MAX_RIGS = 1000  # rigs read per look; more are not shown
HISTORY = 360  # metrics samples read for one rig (an hour at one per 10 s)
MAX_GPUS = 64
MAX_PROBLEMS = 20
MAX_PROBLEM_CHARS = 200
MAX_WORD_CHARS = 64  # state, dialect, version
MAX_NUMBER_CHARS = 40
MAX_JSON_BYTES = 64 << 10  # the gpus and problems fields

#: What ``NotAllowed`` says when the ACL refuses a command or key.
ACL_REFUSED = "not allowed by the Redis ACL"


def fleet_key(fleet: str, name: str) -> str:
    """``aitbc:fleet:{fleet}:{name}``, e.g. ``fleet_key("farm", "rig:b")``."""
    return f"{KEY_ROOT}{fleet}:{name}"


class FleetError(Exception):
    """Reading or commanding the fleet failed; ``str()`` is one line for the operator."""


class FleetUnreachable(FleetError):
    """Redis did not answer: down, refused the connection, or timed out."""


class NotAllowed(FleetError):
    """Redis answered no: the ACL refuses the command or key, or the login is wrong."""


class FleetUnreadable(FleetError):
    """Redis answered with an error: a fleet key of the wrong type, a server error."""


def redis_problem(exc: BaseException) -> FleetError | None:
    """What an error of redis-py means for the operator, or None for any other error
    (``str()`` is one line, never the URL's password)."""
    from redis import exceptions as redis_errors

    if isinstance(exc, redis_errors.NoPermissionError):
        return NotAllowed(ACL_REFUSED)
    if isinstance(exc, redis_errors.AuthenticationError):
        return NotAllowed("Redis refused the login (user name or password)")
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        tls = _tls_refusal(exc)
        return FleetUnreachable("Redis unreachable" if tls is None else
                                untrusted.scrub(f"Redis unreachable: {tls}", max_chars=200))
    if isinstance(exc, redis_errors.ResponseError):
        first = (str(exc).splitlines() or [""])[0]
        return FleetUnreadable(untrusted.scrub(f"Redis answered: {first}", max_chars=200))
    return None


def _tls_refusal(exc: BaseException) -> str | None:
    """Why TLS with Redis failed (redis-py wraps the ``ssl`` error), or None."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes is short; never follow a loop
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"its TLS certificate is not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failed ({seen.reason or type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def talking_to_redis() -> Iterator[None]:
    """Raises ``redis_problem``'s error in place of redis-py's."""
    from redis import exceptions as redis_errors

    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        mapped = redis_problem(exc)
        if mapped is None:
            raise
        raise mapped from exc


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU of a rig at its last heartbeat; ``None`` where the rig did not say."""

    index: int | None = None
    name: str | None = None
    util_pct: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    temp_c: float | None = None
    power_w: float | None = None


@dataclass(frozen=True, slots=True)
class RigView:
    """A rig as its heartbeat hash and its lease show it. ``lease_until`` is the score in
    the fleet's member set; past it, the rig is gone (``lease_expired``)."""

    rig: str
    lease_until: float | None
    lease_expired: bool
    reported: bool = True  # False: a member with no heartbeat hash (yet, or any more)
    state: str | None = None
    seen: float | None = None
    coordinator: str | None = None
    dialect: str | None = None
    version: str | None = None
    slots: int | None = None
    running: int | None = None
    outbox: int | None = None
    completed: int | None = None
    failed: int | None = None
    earned: Decimal | None = None
    earned_per_hour: Decimal | None = None
    gpus: tuple[GpuReading, ...] | None = None
    problems: tuple[str, ...] | None = None
    unreadable: tuple[str, ...] = ()  # fields present but not understood

    @property
    def label(self) -> str:
        """The rig id to show: controls and bidi marks replaced, cut to 64 characters (the
        id itself, as Redis has it, names the rig's keys)."""
        return untrusted.scrub(self.rig, max_chars=64)

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.seen is None else max(0.0, now - self.seen)

    def to_json(self, now: float) -> dict[str, Any]:
        """A JSON object (decimals as strings, to keep every digit)."""
        return {
            "rig": self.rig, "state": self.state, "lease_until": self.lease_until,
            "lease_expired": self.lease_expired, "reported": self.reported,
            "seen": self.seen, "heartbeat_age_s": self.heartbeat_age(now),
            "coordinator": self.coordinator, "dialect": self.dialect,
            "version": self.version, "slots": self.slots, "running": self.running,
            "outbox": self.outbox, "completed": self.completed, "failed": self.failed,
            "earned": _decimal_json(self.earned),
            "earned_per_hour": _decimal_json(self.earned_per_hour),
            "gpus": None if self.gpus is None else [
                {"index": g.index, "name": g.name, "util_pct": g.util_pct,
                 "mem_used_mib": g.mem_used_mib, "mem_total_mib": g.mem_total_mib,
                 "temp_c": g.temp_c, "power_w": g.power_w} for g in self.gpus],
            "problems": None if self.problems is None else list(self.problems),
            "unreadable": list(self.unreadable),
        }


@dataclass(frozen=True, slots=True)
class FleetView:
    """Every rig of ``fleet`` as read at ``at`` (unix seconds), sorted by rig id."""

    fleet: str
    at: float
    rigs: tuple[RigView, ...] = ()

    @property
    def live(self) -> int:
        return sum(1 for rig in self.rigs if not rig.lease_expired)

    def rig(self, rig: str) -> RigView | None:
        return next((r for r in self.rigs if r.rig == rig), None)

    def to_json(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "at": self.at, "live": self.live,
                "rigs": [rig.to_json(self.at) for rig in self.rigs]}


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """One entry of a rig's metrics stream; counters are totals since the rig's journal
    began (``completed``, ``failed``, ``earned``), the rest are readings at ``ts``."""

    id: str
    ts: float | None = None
    completed: int | None = None
    failed: int | None = None
    earned: Decimal | None = None
    gpu_util_pct: float | None = None
    power_w: float | None = None
    outbox: int | None = None
    problems: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "completed": self.completed,
                "failed": self.failed, "earned": _decimal_json(self.earned),
                "gpu_util_pct": self.gpu_util_pct, "power_w": self.power_w,
                "outbox": self.outbox, "problems": self.problems}


# --- reading ---------------------------------------------------------------------


async def read_fleet(redis: Redis, fleet: str, *, now: float | None = None) -> FleetView:
    """Every member of the fleet with its heartbeat hash (one round trip for the hashes)."""
    at = time.time() if now is None else now
    with talking_to_redis():
        members: Any = await redis.zrange(fleet_key(fleet, "rigs"), 0, MAX_RIGS - 1,
                                     withscores=True)
        pipe = redis.pipeline(transaction=False)
        names = [as_text(member) for member, _ in members]
        for name in names:
            pipe.hgetall(fleet_key(fleet, f"rig:{name}"))
        hashes = await pipe.execute(raise_on_error=False) if names else []
    for answer in hashes:  # the ACL refusing one key refuses them all: say so
        if isinstance(answer, Exception) and isinstance(redis_problem(answer), NotAllowed):
            raise NotAllowed(ACL_REFUSED) from answer
    rigs = [_rig(name, score, answer, at)
            for name, (_, score), answer in zip(names, members, hashes, strict=True)]
    return FleetView(fleet=fleet, at=at, rigs=tuple(sorted(rigs, key=lambda r: r.rig)))


async def read_history(redis: Redis, fleet: str, rig: str,
                       count: int = HISTORY) -> tuple[MetricsSample, ...]:
    """The rig's last ``count`` metrics samples, oldest first (none when the key is not a
    stream)."""
    try:
        with talking_to_redis():
            entries: Any = await redis.xrevrange(fleet_key(fleet, f"metrics:{rig}"),
                                                 count=count)
    except FleetUnreadable as exc:
        if "WRONGTYPE" in str(exc):
            return ()
        raise
    return tuple(_sample(entry_id, fields) for entry_id, fields in reversed(entries or []))


# --- tolerant decoding -----------------------------------------------------------


def _rig(name: str, score: Any, answer: Any, now: float) -> RigView:
    lease = _finite(score)
    expired = lease is None or lease < now  # a lease that is no time is no lease
    fields = _Fields({as_text(k): v for k, v in answer.items()}
                     if isinstance(answer, Mapping) else {})
    if lease is None:
        fields.bad.append("lease")
    if not isinstance(answer, Mapping) or not answer:
        if not isinstance(answer, Mapping):  # e.g. WRONGTYPE: not a hash
            fields.bad.append("hash")
        return RigView(rig=name, lease_until=lease, lease_expired=expired, reported=False,
                       unreadable=tuple(fields.bad))
    return RigView(
        rig=name, lease_until=lease, lease_expired=expired,
        state=fields.word("state"), seen=fields.number("seen"),
        coordinator=fields.word("coordinator", 200), dialect=fields.word("dialect"),
        version=fields.word("version"), slots=fields.count("slots"),
        running=fields.count("running"), outbox=fields.count("outbox"),
        completed=fields.count("completed"), failed=fields.count("failed"),
        earned=fields.decimal("earned"), earned_per_hour=fields.decimal("earned_per_hour"),
        gpus=fields.gpus(), problems=fields.problems(), unreadable=tuple(fields.bad))


def _sample(entry_id: Any, raw: Any) -> MetricsSample:
    ident = as_text(entry_id)
    fields = _Fields({as_text(k): v for k, v in raw.items()} if isinstance(raw, Mapping) else {})
    ts = fields.number("ts")
    if ts is None:  # the entry id starts with the server's time in milliseconds
        millis = ident.partition("-")[0]
        ts = int(millis) / 1000 if millis.isascii() and millis.isdigit() and len(millis) < 16 \
            else None
    return MetricsSample(
        id=ident, ts=ts, completed=fields.count("completed"), failed=fields.count("failed"),
        earned=fields.decimal("earned"), gpu_util_pct=fields.number("gpu_util_pct"),
        power_w=fields.number("power_w"), outbox=fields.count("outbox"),
        problems=fields.count("problems"))


@dataclass(slots=True)
class _Fields:
    """Typed reads of a hash or stream entry; each bad field is remembered in ``bad``."""

    raw: dict[str, Any]
    bad: list[str] = field(default_factory=list)

    def _get(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return None
        text = as_text(value).strip()
        return text or None

    def _parsed(self, name: str, parse: Callable[[str], T | None]) -> T | None:
        """``parse`` of the field; a field present but not parsed is remembered in ``bad``."""
        text = self._get(name)
        if text is None:
            return None
        value = parse(text)
        if value is None:
            self.bad.append(name)
        return value

    def word(self, name: str, max_chars: int = MAX_WORD_CHARS) -> str | None:
        text = self._get(name)
        if text is None:
            return None
        return untrusted.scrub(" ".join(text.split()), max_chars=max_chars)

    def number(self, name: str) -> float | None:
        return self._parsed(name, _finite)

    def count(self, name: str) -> int | None:
        return self._parsed(name, _count)

    def decimal(self, name: str) -> Decimal | None:
        return self._parsed(name, _decimal)

    def _json_list(self, name: str) -> list[Any] | None:
        return self._parsed(name, _list)

    def gpus(self) -> tuple[GpuReading, ...] | None:
        items = self._json_list("gpus")
        if items is None:
            return None
        if len(items) > MAX_GPUS or not all(isinstance(item, dict) for item in items):
            self.bad.append("gpus")
            return None
        return tuple(_gpu(item) for item in items)

    def problems(self) -> tuple[str, ...] | None:
        items = self._json_list("problems")
        if items is None:
            return None
        shown = [untrusted.scrub(" ".join(item.split()), max_chars=MAX_PROBLEM_CHARS)
                 for item in items[:MAX_PROBLEMS] if isinstance(item, str) and item.strip()]
        if len(items) > MAX_PROBLEMS:
            shown.append(f"and {len(items) - MAX_PROBLEMS} more")
        if len(shown) < min(len(items), MAX_PROBLEMS):
            self.bad.append("problems")  # some entries were not text
        return tuple(shown)


def _count(text: str) -> int | None:
    if len(text) <= MAX_NUMBER_CHARS and text.isascii() and text.isdigit():
        return int(text)
    return None


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text) if len(text) <= MAX_NUMBER_CHARS else None
    except InvalidOperation:
        return None
    return value if value is not None and value.is_finite() and abs(value.adjusted()) <= 30 \
        else None


def _list(text: str) -> list[Any] | None:
    try:
        value = untrusted.loads(text, max_bytes=MAX_JSON_BYTES, max_depth=4)
    except untrusted.Malformed:
        return None
    return value if isinstance(value, list) else None


def _gpu(item: dict[str, Any]) -> GpuReading:
    index = item.get("index")
    name = item.get("name")
    return GpuReading(
        index=index if isinstance(index, int) and not isinstance(index, bool)
        and 0 <= index < 1 << 16 else None,
        name=untrusted.scrub(" ".join(name.split()), max_chars=MAX_WORD_CHARS)
        if isinstance(name, str) and name.strip() else None,
        util_pct=_reading(item.get("util_pct")), mem_used_mib=_reading(item.get("mem_used_mib")),
        mem_total_mib=_reading(item.get("mem_total_mib")), temp_c=_reading(item.get("temp_c")),
        power_w=_reading(item.get("power_w")))


def _reading(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and abs(number) < 1e12 else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bytes | str):
        text = as_text(value).strip()
        if not text or len(text) > MAX_NUMBER_CHARS:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
    return _reading(value)


def as_text(value: Any) -> str:
    """Redis answers bytes (or str with ``decode_responses``); bad UTF-8 is replaced."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _decimal_json(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
