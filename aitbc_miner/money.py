"""Money: exact amounts (``Decimal``, never ``float``), what they add up to, and the one way
they are written.

Every amount the miner shows or adds (receipt prices, earnings, energy cost, net earnings)
is a :class:`~decimal.Decimal`. Prices arrive as JSON numbers and the journal stores them
as SQLite REALs; :func:`amount_of` turns such a float back into the decimal the
coordinator wrote (``repr`` of a float is its shortest round-trip text, so ``0.1`` reads
``Decimal("0.1")``, not ``0.1000000000000000055...``). From there on, sums are exact.

The value types here are the engine snapshot's earnings (``engine.snapshot`` re-exports
them), the ledger's results and what ``aitbc-miner earnings`` prints: one name per concept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

AITBC = "AITBC"
ZERO = Decimal(0)
MAX_PLACES = 18  # a nonzero amount below 1e-18 is shown as 0 (none exists in practice)


def amount_of(value: object) -> Decimal | None:
    """An exact amount from a JSON/SQLite number or decimal text; None when it is none
    (missing, not a number, NaN or infinite)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            return None
        return amount if amount.is_finite() else None
    return None


def format_amount(amount: Decimal | float | None, currency: str = "", places: int = 4) -> str:
    """``1,234.5000``; an amount too small for ``places`` keeps three significant digits
    (``0.0000200``), never scientific notation and never a nonzero amount shown as
    ``0.0000``; ``-`` for no amount. ``places`` is the least number of decimals (2 for a
    fiat currency: ``0.30``, ``0.0450``)."""
    exact = amount_of(amount)
    if exact is None:
        return "-"
    digits = places
    if exact and abs(exact) < Decimal(1).scaleb(1 - places):  # would lose its digits
        digits = min(MAX_PLACES, max(places, 2 - exact.adjusted()))
    text = f"{exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN):,f}"
    if text.startswith("-") and not text.strip("-0.,"):
        text = text[1:]  # -0.0000 reads as 0.0000
    return f"{text} {currency}" if currency else text


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of AITBC and the number of jobs that earned it."""

    amount: Decimal = ZERO
    jobs: int = 0

    def __add__(self, other: Money) -> Money:
        return Money(self.amount + other.amount, self.jobs + other.jobs)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount - other.amount, self.jobs - other.jobs)


@dataclass(frozen=True, slots=True)
class ProfitLine:
    """One row of the profitability table: a GPU, a model, the idle overhead or the rig.

    Over the measured window: ``earned`` AITBC, ``energy_wh`` drawn for it, what that
    energy ``cost`` in the operator's currency, and the net per hour
    (``earned × rate − cost``, per hour); ``net_per_hour`` is None without an AITBC rate.
    For a GPU, ``idle_wh`` is what it drew with no job (the rig's overhead, not in its net).
    """

    name: str
    earned: Decimal = ZERO
    energy_wh: Decimal = ZERO
    cost: Decimal = ZERO
    net_per_hour: Decimal | None = None
    idle_wh: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Profitability:
    """Earnings against the energy they took, over ``window_s`` (the last hour, or since
    power was first measured if that is later). ``rig`` is everything (the idle overhead
    included); ``by_gpu`` and ``by_model`` count only the energy drawn while their jobs
    ran, and ``idle`` is the overhead shown on its own."""

    currency: str
    price_per_kwh: Decimal
    aitbc_rate: Decimal | None  # the value of 1 AITBC in ``currency``; None: unknown
    window_s: float
    rig: ProfitLine
    idle: ProfitLine
    by_gpu: tuple[ProfitLine, ...] = ()
    by_model: tuple[ProfitLine, ...] = ()
    metered: bool = True  # False: no GPU reported its power, so energy reads 0


@dataclass(frozen=True, slots=True)
class Earnings:
    """What the journal's receipts add up to (``aitbc_miner.ledger``), over time.

    Ledger states: **issued** (receipts we got, one per job), **verified** (of those, the
    counted ones: all time), **paid** (verified jobs the coordinator reports paid),
    **flagged** (invalid, mismatched, duplicate: never counted). Time windows are UTC days
    (``today``, ``last_7_days``) and whole minutes: ``last_hour`` is the current minute and
    the 59 before it. Rates are AITBC per hour: ``per_hour_now`` over the current minute
    and the 9 before it, ``per_hour_last_hour`` over 60 minutes, ``per_hour_last_day``
    over 24 hours, each divided by the time its minutes span so far.
    """

    today: Money = Money()
    last_7_days: Money = Money()
    last_hour: Money = Money()
    issued: Money = Money()
    verified: Money = Money()
    paid: Money = Money()
    flagged: Money = Money()
    per_hour_now: Decimal = ZERO
    per_hour_last_hour: Decimal = ZERO
    per_hour_last_day: Decimal = ZERO
    hourly: tuple[tuple[int, Money], ...] = ()  # (hour start, epoch s), last 24, oldest first
    by_day: tuple[tuple[str, Money], ...] = ()  # "YYYY-MM-DD" (UTC), newest first
    by_model: tuple[tuple[str, Money], ...] = ()  # payload model, else the job type
    by_gpu: tuple[tuple[str, Money], ...] = ()  # "gpu:0", "cpu": where the job ran
    by_type: tuple[tuple[str, Money], ...] = ()
    failures_by_code: tuple[tuple[str, int], ...] = ()  # all time, most first
    failures_last_hour: tuple[tuple[str, int], ...] = ()
    finished_last_hour: int = 0
    failure_rate_now: float | None = None  # failed / finished, last 10 minutes
    failure_rate_last_hour: float | None = None
    profit: Profitability | None = None
    currency: str = AITBC
