"""The one backoff policy: capped exponential growth with full jitter.

``delay(attempt)`` is uniform in ``[0, min(cap, base * 2**attempt)]`` (AWS "full jitter"):
many miners that lost the same coordinator spread their retries instead of stampeding,
and no delay ever exceeds ``cap``, so a miner is back within ``cap`` seconds of the
coordinator's return (never GitLab Runner's hour-long lockout). A ``Retry-After`` from
the server replaces the computed delay, bounded by ``retry_after_cap``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    base_s: float = 0.25  # first retry waits at most this long
    cap_s: float = 5.0  # no retry ever waits longer (seconds)
    retry_after_cap_s: float = 60.0  # a server may ask for more, within reason
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The delay before the next try; counts the attempt."""
        self.attempt += 1
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.retry_after_cap_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempt - 1, 32))
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def jittered(interval_s: float, rng: random.Random, spread: float = 0.1) -> float:
    """``interval_s`` +/- ``spread`` (fraction), so periodic calls of many miners drift apart."""
    return interval_s * (1.0 + rng.uniform(-spread, spread))


def idle_interval(idle_polls: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Pause after the ``idle_polls``-th empty poll in a row: doubles from ``min_s`` to ``max_s``.

    A free miner asks again within ``min_s`` right after work stops, and settles at one
    poll per ``max_s`` (+/-10 %) when the coordinator stays empty.
    """
    base = min(max_s, min_s * 2 ** max(0, min(idle_polls - 1, 32)))
    return min(max_s, jittered(base, rng))
