"""2026-08 per-client-IP rate limits: a fixed window per (endpoint, IP), 429 + Retry-After."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .clock import Clock

# (requests, window seconds) per endpoint, as 2026-08 ships them.
DEFAULT_LIMITS_2026_08: dict[str, tuple[int, float]] = {
    "register": (50, 60.0),
    "heartbeat": (100, 60.0),
    "poll": (100, 60.0),
    "result": (50, 60.0),
    "fail": (50, 60.0),
}


@dataclass(slots=True)
class _Window:
    start: float
    count: int


class RateLimiter:
    """Counts calls per (endpoint, ip) in fixed windows read off the devnet clock."""

    def __init__(self, limits: Mapping[str, tuple[int, float]], clock: Clock) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def check(self, endpoint: str, ip: str) -> float | None:
        """None when allowed (and counted); else the seconds until the window reopens."""
        limit = self.limits.get(endpoint)
        if limit is None:
            return None
        count, period = limit
        now = self.clock.now()
        window = self._windows.get((endpoint, ip))
        if window is None or now >= window.start + period:
            window = self._windows[(endpoint, ip)] = _Window(now, 0)
        if window.count >= count:
            return window.start + period - now
        window.count += 1
        return None

    def reset(self) -> None:
        self._windows.clear()


def retry_after_header(wait: float) -> str:
    """Whole seconds, at least 1 (HTTP's Retry-After has no fractions)."""
    return str(max(1, math.ceil(wait)))


def resolve_limits(
    dialect_default: bool,
    limits: Mapping[str, tuple[int, float]] | bool | None,
    scale: float = 1.0,
) -> dict[str, tuple[int, float]]:
    """None: the dialect's default table (scaled); False/{}: off; a mapping: exactly that."""
    if limits is False:
        return {}
    if limits is None or limits is True:
        if limits is None and not dialect_default:
            return {}
        return {k: (max(1, round(n * scale)), w) for k, (n, w) in DEFAULT_LIMITS_2026_08.items()}
    return {k: (int(n), float(w)) for k, (n, w) in limits.items()}
