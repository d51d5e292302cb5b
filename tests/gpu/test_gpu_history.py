"""GPU history: bucket means (never peaks) in fixed memory, gaps, the time axis, energy."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from aitbc_miner.gpu import Sampler
from aitbc_miner.gpu.history import METRICS, HistoryRing, Series
from tests.fakes.fake_pynvml import FakeNvml

MakeSampler = Callable[..., tuple[FakeNvml, Sampler]]


class Clock:
    """A hand-moved time.time() for the sampler."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


async def test_each_bucket_shows_the_mean_of_its_readings_not_the_peak(
        sampler_for: MakeSampler) -> None:
    # Given a sampler with 5 s buckets, and three readings in one bucket: 10, 95, 15 %
    clock = Clock(1000.0)
    fake, sampler = sampler_for(FakeNvml.with_gpus(1), clock=clock, history=4)
    gpu = fake.gpus[0]
    for at, util, mib, temp, mw in ((1000.0, 10, 1000, 40, 100_000),
                                    (1001.0, 95, 3000, 70, 400_000),
                                    (1002.0, 15, 2000, 40, 100_000),
                                    (1005.0, 0, 500, 30, 60_000)):  # the next bucket
        clock.at = at
        gpu.util_gpu, gpu.memory_used_mib, gpu.temperature_c, gpu.power_mw = util, mib, temp, mw
        await sampler.sample_once()
    # Then the first bucket holds the means, the second its one reading
    h = sampler.snapshot.gpus[0].history
    assert h.util_pct.means[-2:] == (40.0, 0.0)  # (10 + 95 + 15) / 3, not 95
    assert h.vram_mib.means[-2:] == (2000.0, 500.0)
    assert h.temperature_c.means[-2:] == (50.0, 30.0)
    assert h.power_w.means[-2:] == (200.0, 60.0)
    assert h.util_pct.counts[-2:] == (3, 1)
    # And the buckets before the first reading are gaps, not zeros
    assert h.util_pct.means[:2] == (None, None)
    # And the time axis: 4 buckets of 5 s ending with the bucket of the newest reading
    assert (h.bucket_s, h.span_s, h.end) == (5.0, 20.0, 1010.0)
    assert h.util_pct.start_of(3) == 1005.0


def test_merging_buckets_for_a_narrow_screen_weights_each_reading_the_same() -> None:
    # Given bucket means 40 (3 readings) and 0 (1 reading) and a gap
    series = Series(5.0, 1015.0, (40.0, 0.0, None), (3, 1, 0))
    # When they are shown in fewer columns
    assert series.resample(3) == (40.0, 0.0, None)  # enough room: unchanged
    assert series.resample(1) == (30.0,)  # (3 * 40 + 1 * 0) / 4: the mean of all readings
    assert series.resample(2) == (30.0, None)  # buckets 0-1 in column 0, the gap in 1
    assert series.mean() == 30.0 and series.mean(since=1005.0) == 0.0
    assert series.latest == 0.0


def test_the_ring_keeps_fixed_memory_whatever_the_run_time() -> None:
    # Given a 120 x 5 s ring
    ring = HistoryRing(5.0, 120)
    size = ring.memory_bytes
    # When a month of readings at one per second goes in (sampled: every 97th second)
    times = range(0, 30 * 86_400, 97)
    for at in times:
        ring.add(float(at), (50.0, 1000.0, 60.0, 200.0))
    # Then it holds the same 120 buckets in the same memory, newest last
    assert ring.memory_bytes == size == 2 * 8 * 120 * len(METRICS)
    series = ring.series(0)
    assert len(series.means) == 120 and series.end == times[-1] // 5 * 5 + 5
    assert series.means[-1] == 50.0 and sum(series.counts) == len(range(0, 600, 97))


def test_gaps_and_late_readings() -> None:
    ring = HistoryRing(10.0, 6, metrics=1)
    ring.add(100.0, (1.0,))
    ring.add(135.0, (4.0,))  # buckets 110 and 120 are gaps
    assert ring.series(0).means == (None, None, 1.0, None, None, 4.0)
    ring.add(101.0, (3.0,))  # late, still inside the window: joins its bucket
    ring.add(10.0, (99.0,))  # older than the window: dropped
    ring.add(136.0, (None,))  # the device could not say: no reading
    assert ring.series(0).means == (None, None, 2.0, None, None, 4.0)
    # A device that stops reporting shows gaps up to now
    assert ring.series(0, now=150.0).means == (2.0, None, None, 4.0, None, None)
    with pytest.raises(ValueError):
        HistoryRing(0, 10)


async def test_energy_since_start_per_job_share_and_over_the_day(
        sampler_for: MakeSampler) -> None:
    # Given one GPU drawing 200 W for an hour, sampled every second, with two jobs on it
    clock = Clock(7200.0)
    fake, sampler = sampler_for(FakeNvml.with_gpus(1, power_mw=200_000), clock=clock)
    uuid = fake.gpus[0].uuid
    sampler.track_job("a", uuid)
    sampler.track_job("b", uuid)
    for at in itertools.count(7200):
        clock.at = float(at)
        await sampler.sample_once()
        if at == 7200 + 3600:
            break
    view = sampler.snapshot.gpus[0]
    # Then it drew 200 Wh; each job is charged half; the day's power says the same
    assert view.energy_wh == pytest.approx(200.0)
    stats = {j.job_id: j.energy_wh for j in sampler.snapshot.jobs}
    assert stats == pytest.approx({"a": 100.0, "b": 100.0})
    assert sampler.energy_wh(uuid) == pytest.approx(200.0, rel=0.02)  # 1-min buckets
    assert sampler.energy_wh("0", since=7200.0 + 1800) == pytest.approx(100.0, rel=0.04)
    # And a reading after a long silence adds no made-up energy
    clock.at += 600
    await sampler.sample_once()
    assert sampler.snapshot.gpus[0].energy_wh == pytest.approx(200.0)


def test_reusing_closed_buckets_gives_what_a_fresh_read_gives() -> None:
    # Given a ring read after every reading (so it reuses closed buckets), and readings
    # that come in order, skip buckets, arrive late, or lack a value
    rng = random.Random(7)
    ring = HistoryRing(5.0, 12, metrics=2)
    at = 1000.0
    for _ in range(2000):
        at += rng.choice((0.5, 1.0, 3.0, 7.0, 26.0, 90.0))
        late = rng.random() < 0.05
        when = at - rng.uniform(0, 40) if late else at
        ring.add(when, (rng.choice((None, rng.uniform(0, 100))), rng.uniform(0, 10)))
        # Then every read equals a read of the same buckets without reuse
        for metric in (0, 1):
            got = ring.series(metric)
            newest = ring._newest
            assert newest is not None
            want_means, want_counts = ring._buckets(metric, newest - 11, newest + 1)
            assert (got.means, got.counts) == (want_means, want_counts)
