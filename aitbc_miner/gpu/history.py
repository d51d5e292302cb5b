"""Per-device history in fixed memory: readings folded into time buckets, one mean each.

A :class:`HistoryRing` has ``size`` buckets of ``bucket_s`` seconds (the sampler keeps
120 x 5 s, ten minutes, for the screens, and 1,440 x 60 s, a day, of power for energy
figures). A reading adds to its bucket's sum and count; a bucket shows the **mean** of
its readings, never the peak. Buckets live in preallocated arrays reused in a circle, so
the memory is the same after a minute and after a month. A bucket with no reading (the
sampler stopped, the device could not say) is a gap: ``None``, never a made-up zero.

Everything a ring hands out (:class:`Series`, :class:`GpuHistory`) is frozen: the
engine's snapshot carries them to the console and over the control socket as they are.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: The metrics every device's history keeps, in this order.
METRICS: Final = ("util_pct", "vram_mib", "temperature_c", "power_w")

RECENT_BUCKET_S: Final = 5.0  # the screens' history: 120 buckets of 5 s = 10 minutes
RECENT_BUCKETS: Final = 120
DAY_BUCKET_S: Final = 60.0  # power over a day, for energy figures: 1,440 buckets of 1 min
DAY_BUCKETS: Final = 1440


@dataclass(frozen=True, slots=True)
class Series:
    """One metric over time, oldest bucket first.

    ``means[i]`` is the mean of the readings that fell in bucket ``i`` (``None``: none
    did), ``counts[i]`` how many. Bucket ``i`` covers
    ``[end - (len - i) * bucket_s, end - (len - i - 1) * bucket_s)``; the newest bucket
    is still filling while the sampler runs.
    """

    bucket_s: float
    end: float  # when the newest bucket ends (a time.time() value)
    means: tuple[float | None, ...] = ()
    counts: tuple[int, ...] = ()

    @property
    def span_s(self) -> float:
        """The time the series covers (gaps included)."""
        return self.bucket_s * len(self.means)

    @property
    def latest(self) -> float | None:
        """The newest bucket's mean that has a reading (``None`` if none has)."""
        return next((m for m in reversed(self.means) if m is not None), None)

    def start_of(self, i: int) -> float:
        """When bucket ``i`` starts."""
        return self.end - (len(self.means) - i) * self.bucket_s

    def resample(self, width: int) -> tuple[float | None, ...]:
        """At most ``width`` values, oldest first: consecutive buckets merged into one
        column when there are more buckets than columns. A merged column is the mean of
        all the readings in its buckets (each bucket weighted by its count), so a spike
        shows at its true weight, not as the column's peak."""
        n = len(self.means)
        if width <= 0:
            return ()
        if n <= width:
            return self.means
        sums = [0.0] * width
        counts = [0] * width
        for i, (mean, count) in enumerate(zip(self.means, self.counts, strict=True)):
            if mean is None or not count:
                continue
            col = i * width // n
            sums[col] += mean * count
            counts[col] += count
        return tuple(s / c if c else None for s, c in zip(sums, counts, strict=True))

    def mean(self, since: float | None = None) -> float | None:
        """The mean of every reading in buckets that start at or after ``since``."""
        total, count = 0.0, 0
        for i, (mean, n) in enumerate(zip(self.means, self.counts, strict=True)):
            if mean is None or (since is not None and self.start_of(i) < since):
                continue
            total += mean * n
            count += n
        return total / count if count else None

    def integral_h(self, since: float | None = None, until: float | None = None) -> float:
        """Sum of ``mean x bucket length`` in hours over the buckets that start in
        ``[since, until)``: for a power series, the energy in Wh (a bucket with readings
        counts for its whole length; a gap counts as nothing)."""
        total = 0.0
        for i, mean in enumerate(self.means):
            start = self.start_of(i)
            if mean is None or (since is not None and start < since) or (
                    until is not None and start >= until):
                continue
            total += mean * self.bucket_s / 3600.0
        return total


@dataclass(frozen=True, slots=True)
class GpuHistory:
    """A device's history: one :class:`Series` per metric, on the same buckets.

    Units: utilization in %, VRAM used in MiB, temperature in Celsius, power in W.
    """

    util_pct: Series
    vram_mib: Series
    temperature_c: Series
    power_w: Series

    @property
    def bucket_s(self) -> float:
        return self.util_pct.bucket_s

    @property
    def end(self) -> float:
        return self.util_pct.end

    @property
    def span_s(self) -> float:
        return self.util_pct.span_s


def empty_history(bucket_s: float = RECENT_BUCKET_S, end: float = 0.0) -> GpuHistory:
    return GpuHistory(*(Series(bucket_s, end) for _ in METRICS))


class HistoryRing:
    """``size`` buckets of ``bucket_s`` seconds for ``len(METRICS)`` metrics, in two
    preallocated arrays (sums and counts) used as a circle. Not thread-safe: the sampler
    folds readings in on the event loop only."""

    __slots__ = ("bucket_s", "size", "_closed", "_counts", "_newest", "_sums", "_width")

    def __init__(self, bucket_s: float, size: int, metrics: int = len(METRICS)) -> None:
        if bucket_s <= 0 or size < 1 or metrics < 1:
            raise ValueError("bucket_s > 0, size >= 1 and metrics >= 1 are required")
        self.bucket_s = float(bucket_s)
        self.size = size
        self._width = metrics
        self._sums = array("d", bytes(8 * size * metrics))
        self._counts = array("q", bytes(8 * size * metrics))
        self._newest: int | None = None  # the absolute number of the newest bucket
        # Per metric, the means and counts of the buckets before the newest, as of the
        # newest bucket they were built for: only the newest changes from one sample to
        # the next, so a series costs one bucket, not ``size``.
        self._closed: dict[int, tuple[int, tuple[float | None, ...], tuple[int, ...]]] = {}

    @property
    def memory_bytes(self) -> int:
        """What the buckets take; fixed when the ring is made."""
        return (self._sums.itemsize * len(self._sums)
                + self._counts.itemsize * len(self._counts))

    def add(self, at: float, values: Sequence[float | None]) -> None:
        """Fold one reading (one value per metric, ``None`` for "could not say") into the
        bucket of time ``at``. A reading older than the ring's window is dropped."""
        if not math.isfinite(at):
            return
        number = math.floor(at / self.bucket_s)
        if self._newest is None or number > self._newest:
            first = number - self.size + 1 if self._newest is None else max(
                self._newest + 1, number - self.size + 1)
            for b in range(first, number + 1):  # at most ``size`` buckets are cleared
                self._clear(b)
            self._newest = number
        elif number <= self._newest - self.size:
            return
        elif number < self._newest:
            self._closed.clear()  # a late reading changed a closed bucket
        base = (number % self.size) * self._width
        for k, value in enumerate(values[:self._width]):
            if value is None or not math.isfinite(value):
                continue
            self._sums[base + k] += value
            self._counts[base + k] += 1

    def _clear(self, number: int) -> None:
        base = (number % self.size) * self._width
        for k in range(self._width):
            self._sums[base + k] = 0.0
            self._counts[base + k] = 0

    def series(self, metric: int, now: float | None = None) -> Series:
        """One metric's buckets, oldest first, ending with the bucket of ``now`` (default:
        the newest reading's), so that a device that stopped reporting shows gaps."""
        newest = self._newest
        if now is not None and math.isfinite(now):
            current = math.floor(now / self.bucket_s)
            newest = current if newest is None else max(newest, current)
        if newest is None:
            return Series(self.bucket_s, 0.0)
        end = (newest + 1) * self.bucket_s
        first = newest - self.size + 1
        cached = self._closed.get(metric)
        if newest != self._newest:  # asked past the newest reading: gaps up to ``now``
            means, counts = self._buckets(metric, first, newest + 1)
            return Series(self.bucket_s, end, means, counts)
        if cached is not None and cached[0] <= newest:
            # Reuse the closed buckets still in the window; read only the ones that
            # closed since (none while the newest bucket fills).
            was, old_means, old_counts = cached
            keep = max(0, was - first)  # cached buckets first .. was-1
            more_means, more_counts = self._buckets(metric, max(first, was), newest)
            means = old_means[len(old_means) - keep:] + more_means if keep else more_means
            counts = old_counts[len(old_counts) - keep:] + more_counts if keep else more_counts
        else:
            means, counts = self._buckets(metric, first, newest)
        self._closed[metric] = (newest, means, counts)
        last_means, last_counts = self._buckets(metric, newest, newest + 1)
        return Series(self.bucket_s, end, means + last_means, counts + last_counts)

    def _buckets(self, metric: int, start: int, stop: int,
                 ) -> tuple[tuple[float | None, ...], tuple[int, ...]]:
        """Means and counts of buckets ``start`` .. ``stop - 1`` (absolute numbers); a
        bucket outside what the ring holds is a gap."""
        means: list[float | None] = []
        counts: list[int] = []
        newest = self._newest
        for number in range(start, stop):
            if newest is None or number > newest or number <= newest - self.size:
                means.append(None)
                counts.append(0)
                continue
            i = (number % self.size) * self._width + metric
            count = self._counts[i]
            means.append(self._sums[i] / count if count else None)
            counts.append(count)
        return tuple(means), tuple(counts)

    def history(self, now: float | None = None) -> GpuHistory:
        """Every metric (the ring must keep all of :data:`METRICS`)."""
        return GpuHistory(*(self.series(k, now) for k in range(len(METRICS))))
