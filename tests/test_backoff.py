"""The one backoff policy: its documented bounds, checked with a seeded random.Random."""

from __future__ import annotations

import random

import pytest

from aitbc_miner.backoff import Backoff, idle_interval, jittered

DRAWS = 400  # samples per check: enough to see both ends of a uniform range


def test_no_delay_is_ever_negative_or_above_the_cap() -> None:
    # Given a backoff with the documented defaults and a seeded generator
    backoff = Backoff(rng=random.Random(1))
    # When it is asked for many delays in a row (a long outage)
    delays = [backoff.next_delay() for _ in range(DRAWS)]
    # Then every delay lies in [0, cap]
    assert all(0.0 <= d <= backoff.cap_s for d in delays)
    assert backoff.attempt == DRAWS


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 10, 1000])
def test_the_ceiling_doubles_from_base_until_it_reaches_the_cap(attempt: int) -> None:
    # Given backoffs that have already failed attempt - 1 times
    rng = random.Random(attempt)
    ceiling = min(5.0, 0.25 * 2 ** (attempt - 1))
    delays = []
    for _ in range(DRAWS):
        backoff = Backoff(base_s=0.25, cap_s=5.0, rng=rng, attempt=attempt - 1)
        # When the next delay is drawn
        delays.append(backoff.next_delay())
    # Then it is uniform over [0, min(cap, base * 2**(attempt-1))]: full jitter up to the ceiling
    assert max(delays) <= ceiling
    assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling


def test_a_huge_attempt_count_does_not_overflow() -> None:
    # Given a backoff that has been failing for a very long time
    backoff = Backoff(rng=random.Random(3), attempt=10**6)
    # When asked for the next delay, Then it is still a delay within the cap
    assert 0.0 <= backoff.next_delay() <= backoff.cap_s


@pytest.mark.parametrize("retry_after, expected", [(0.0, 0.0), (3.0, 3.0), (30.0, 30.0),
                                                   (3600.0, 60.0)])
def test_retry_after_replaces_the_computed_delay_within_its_own_cap(
    retry_after: float, expected: float
) -> None:
    # Given a first retry (whose computed delay would be at most 0.25 s)
    backoff = Backoff(rng=random.Random(4))
    # When the server said Retry-After
    delay = backoff.next_delay(retry_after)
    # Then that is the delay (above the normal cap if asked, but never above retry_after_cap)
    assert delay == expected
    assert backoff.attempt == 1, "a refused attempt still counts"


def test_reset_starts_again_from_the_base() -> None:
    # Given a backoff that has reached its cap
    backoff = Backoff(rng=random.Random(5))
    for _ in range(20):
        backoff.next_delay()
    # When the call succeeds and the backoff is reset
    backoff.reset()
    # Then the next failures wait at most base again
    assert all(Backoff(rng=random.Random(i), attempt=backoff.attempt).next_delay() <= 0.25
               for i in range(50))


def test_the_same_seed_gives_the_same_delays() -> None:
    # Given two backoffs with the same seed, When both are asked the same questions
    a, b = Backoff(rng=random.Random(9)), Backoff(rng=random.Random(9))
    # Then they answer the same (tests can rely on a seed)
    assert [a.next_delay() for _ in range(10)] == [b.next_delay() for _ in range(10)]


def test_jittered_intervals_stay_within_ten_percent() -> None:
    # Given a periodic interval of 15 s, When jittered many times
    rng = random.Random(6)
    values = [jittered(15.0, rng) for _ in range(DRAWS)]
    # Then each is within +/-10 % and both halves of the range are used
    assert all(13.5 <= v <= 16.5 for v in values)
    assert min(values) < 14.0 and max(values) > 16.0


def test_idle_interval_doubles_from_min_to_max_and_never_exceeds_max() -> None:
    # Given an idle poller with min 0.25 s and max 5 s
    rng = random.Random(7)
    for idle_polls in range(1, 12):
        base = min(5.0, 0.25 * 2 ** (idle_polls - 1))
        # When it computes the pause after its n-th empty poll (many times)
        values = [idle_interval(idle_polls, 0.25, 5.0, rng) for _ in range(50)]
        # Then the pause is the doubled base, +/-10 %, and never above max
        assert all(0.9 * base <= v <= min(5.0, 1.1 * base) for v in values), (idle_polls, values)
    # ...so it settles at max after enough empty polls
    assert idle_interval(50, 0.25, 5.0, rng) >= 4.5


def test_idle_interval_starts_near_min_after_work_stops() -> None:
    # Given the first empty poll after a claim, When its pause is computed
    values = [idle_interval(1, 0.25, 5.0, random.Random(i)) for i in range(50)]
    # Then it is about min (the miner asks again quickly), never the settled max
    assert all(0.225 <= v <= 0.275 for v in values)
    # ...and a zero count (defensive) is treated like the first
    assert 0.225 <= idle_interval(0, 0.25, 5.0, random.Random(1)) <= 0.275
