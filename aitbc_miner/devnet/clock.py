"""Injectable time source, so TTL expiry and rate-limit windows are tested without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Unix seconds, advanceable: the devnet reads every timestamp through one of these."""

    def now(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


class SystemClock:
    """Wall time plus an offset, so a running devnet (even a subprocess) can be sped forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def iso_naive_utc(ts: float) -> str:
    """The job view's timestamp form: ISO-8601 UTC without a zone suffix (spec)."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat()
