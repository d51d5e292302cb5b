"""Energy and profitability: the energy each GPU draws, put down to the work running on
it, and set against what that work earned.

**Integration** is the GPU sampler's (``aitbc_miner.gpu.telemetry``): it integrates each
device's NVML power between readings (trapezoids; readings more than
``MAX_ENERGY_GAP_S`` apart add nothing) into ``energy_wh``, the Wh drawn since it
started. This module only takes the difference between two samples (exact decimals from
there on) and decides whose it is.

**Attribution.** The energy of an interval goes to the jobs that ran on the GPU at its
start, shared equally when one GPU runs several (``gpu:0/0``, ``gpu:0/1``), under each
job's model (else its job type). A GPU with no job draws **idle** energy: the rig's
overhead, shown on its own and not charged to any GPU's or model's net. An interval that
spans a minute boundary is split at it in proportion to time.

**Profitability** (:func:`profitability`) is measured over the last hour's minutes that
had energy readings: ``cost = kWh × price``, ``net per hour = (AITBC earned × rate −
cost) / hours measured``; per GPU and per model with the energy of their work, for the
rig with the idle overhead too.

The meter keeps per-minute buckets for the last 24 hours (bounded), and can be saved to
and loaded from a small JSON file next to the journal so ``aitbc-miner earnings`` (and
the next start) see it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .gpu.telemetry import MAX_ENERGY_GAP_S
from .ledger import DAY_MINUTES, HOUR_MINUTES, MINUTE_S, Book, minute_of
from .money import ZERO, Profitability, ProfitLine, amount_of

if TYPE_CHECKING:
    from .config import Settings

WH_PER_KWH = 1000
WH_PLACES = Decimal("1e-3")
MONEY_PLACES = Decimal("1e-6")
ENERGY_FILE_SUFFIX = ".energy.json"


@dataclass(frozen=True, slots=True)
class Tariff:
    """The operator's prices: electricity per kWh, and what 1 AITBC is worth, in
    ``currency`` (``aitbc_rate`` None: unknown, so no net figure)."""

    price_per_kwh: Decimal
    currency: str = "EUR"
    aitbc_rate: Decimal | None = None


def tariff_from(settings: Settings) -> Tariff | None:
    """The configured tariff (``earnings`` section); None without an electricity price."""
    e = settings.earnings
    if e.power_price_per_kwh is None:
        return None
    return Tariff(e.power_price_per_kwh, e.currency, e.aitbc_rate)


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """One GPU at one sample: the sampler's running energy total, and the work on it."""

    gpu: str  # "gpu:0", as ``ledger.gpu_of`` names its slots' device
    energy_wh: Decimal | None  # Wh drawn since the sampler started; None: not known
    work: tuple[str, ...] = ()  # the model (else job type) of each job running on it


@dataclass(slots=True)
class _Drawn:
    """Wh drawn in one minute, and how many milliseconds each GPU was metered."""

    busy: dict[str, Decimal] = field(default_factory=dict)  # by GPU, while jobs ran
    idle: dict[str, Decimal] = field(default_factory=dict)  # by GPU, with no job
    by_model: dict[str, Decimal] = field(default_factory=dict)
    metered_ms: dict[str, int] = field(default_factory=dict)


def energy_path(journal_path: Path) -> Path:
    return journal_path.with_name(journal_path.name + ENERGY_FILE_SUFFIX)


class EnergyMeter:
    def __init__(self) -> None:
        self.minutes: dict[int, _Drawn] = {}
        self._last: dict[str, tuple[int, EnergyReading]] = {}  # gpu -> (at ms, reading)
        self._latest_minute = 0

    def observe(self, at: float, readings: Iterable[EnergyReading]) -> None:
        """Readings taken at ``at`` (seconds): each GPU's energy since its previous one is
        put down to the work on it then."""
        at_ms = round(at * 1000)
        for reading in readings:
            previous = self._last.get(reading.gpu)
            self._last[reading.gpu] = (at_ms, reading)
            if previous is None or reading.energy_wh is None:
                continue
            start_ms, held = previous
            span_ms = at_ms - start_ms
            if held.energy_wh is None or not 0 < span_ms <= MAX_ENERGY_GAP_S * 1000:
                continue  # the sampler adds nothing over such a gap either
            drawn_wh = reading.energy_wh - held.energy_wh
            if drawn_wh < 0:
                continue  # the sampler started again: its total went back to zero
            while start_ms < at_ms:  # split at minute boundaries, in proportion to time
                minute = start_ms // (MINUTE_S * 1000)
                end_ms = min(at_ms, (minute + 1) * MINUTE_S * 1000)
                self._add(minute, held, drawn_wh * (end_ms - start_ms) / span_ms,
                          end_ms - start_ms)
                start_ms = end_ms

    def _add(self, minute: int, reading: EnergyReading, wh: Decimal, ms: int) -> None:
        if minute > self._latest_minute:
            self._latest_minute = minute
            for old in [m for m in self.minutes if m <= minute - DAY_MINUTES]:
                del self.minutes[old]
        drawn = self.minutes.setdefault(minute, _Drawn())
        gpu = reading.gpu
        drawn.metered_ms[gpu] = drawn.metered_ms.get(gpu, 0) + ms
        if not reading.work:
            drawn.idle[gpu] = drawn.idle.get(gpu, ZERO) + wh
            return
        drawn.busy[gpu] = drawn.busy.get(gpu, ZERO) + wh
        share = wh / len(reading.work)
        for model in reading.work:
            drawn.by_model[model] = drawn.by_model.get(model, ZERO) + share

    # --- the file next to the journal -------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "minutes": {
            str(m): {"busy": _texts(d.busy), "idle": _texts(d.idle),
                     "by_model": _texts(d.by_model), "metered_ms": d.metered_ms}
            for m, d in sorted(self.minutes.items())}}

    @classmethod
    def from_json(cls, data: Any) -> EnergyMeter:
        """A meter from ``to_json``'s shape; anything malformed is skipped, never raised."""
        meter = cls()
        minutes = data.get("minutes") if isinstance(data, dict) else None
        for key, item in (minutes.items() if isinstance(minutes, dict) else ()):
            if not (isinstance(key, str) and key.isdigit() and isinstance(item, dict)):
                continue
            meter.minutes[int(key)] = _Drawn(
                _amounts(item.get("busy")), _amounts(item.get("idle")),
                _amounts(item.get("by_model")),
                {str(k): v for k, v in (item.get("metered_ms") or {}).items()
                 if isinstance(v, int) and not isinstance(v, bool) and v > 0}
                if isinstance(item.get("metered_ms"), dict) else {})
        meter._latest_minute = max(meter.minutes, default=0)
        return meter

    @staticmethod
    def save_json(path: Path, data: dict[str, Any]) -> None:
        """Write ``to_json()``'s result (taken on the loop) atomically; blocking."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def restore(self, saved: EnergyMeter) -> None:
        """Take the saved minutes this meter has not measured itself (at start)."""
        for minute, drawn in saved.minutes.items():
            self.minutes.setdefault(minute, drawn)
        self._latest_minute = max(self.minutes, default=0)

    @classmethod
    def load(cls, path: Path) -> EnergyMeter:
        """The saved meter; an empty one when there is no file or it is unreadable."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            return cls()


def _texts(values: dict[str, Decimal]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


def _amounts(values: Any) -> dict[str, Decimal]:
    if not isinstance(values, dict):
        return {}
    out = {}
    for k, v in values.items():
        amount = amount_of(v)
        if amount is not None:
            out[str(k)] = amount
    return out


def profitability(book: Book, meter: EnergyMeter, tariff: Tariff, now: float,
                  minutes: int = HOUR_MINUTES) -> Profitability:
    """Earnings against energy over the last ``minutes`` that had power readings."""
    cur = minute_of(now)
    window = [m for m in range(cur - minutes + 1, cur + 1)
              if m in meter.minutes and meter.minutes[m].metered_ms]
    covered_ms = sum(max(meter.minutes[m].metered_ms.values()) for m in window)
    earned: dict[str, dict[str, Decimal]] = {"gpu": {}, "model": {}}
    total = ZERO
    busy: dict[str, Decimal] = {}
    idle: dict[str, Decimal] = {}
    by_model: dict[str, Decimal] = {}
    for m in window:
        amount, gpu_part, model_part = book.earned_between(m, m)
        total += amount
        _merge(earned["gpu"], gpu_part)
        _merge(earned["model"], model_part)
        drawn = meter.minutes[m]
        _merge(busy, drawn.busy)
        _merge(idle, drawn.idle)
        _merge(by_model, drawn.by_model)

    def line(name: str, aitbc: Decimal, wh: Decimal, idle_wh: Decimal = ZERO) -> ProfitLine:
        cost = wh * tariff.price_per_kwh / WH_PER_KWH
        net = None
        if tariff.aitbc_rate is not None and covered_ms:
            net = ((aitbc * tariff.aitbc_rate - cost) * 3_600_000 / covered_ms
                   ).quantize(MONEY_PLACES)
        return ProfitLine(name, aitbc, wh.quantize(WH_PLACES), cost.quantize(MONEY_PLACES),
                          net, idle_wh.quantize(WH_PLACES))

    idle_total = sum(idle.values(), ZERO)
    gpus = sorted(set(busy) | set(idle) | set(earned["gpu"]))
    models = sorted(set(by_model) | set(earned["model"]))
    return Profitability(
        currency=tariff.currency, price_per_kwh=tariff.price_per_kwh,
        aitbc_rate=tariff.aitbc_rate, window_s=covered_ms / 1000,
        rig=line("rig", total, sum(busy.values(), ZERO) + idle_total, idle_total),
        idle=line("idle", ZERO, idle_total),
        by_gpu=tuple(line(g, earned["gpu"].get(g, ZERO), busy.get(g, ZERO), idle.get(g, ZERO))
                     for g in gpus),
        by_model=tuple(line(m, earned["model"].get(m, ZERO), by_model.get(m, ZERO))
                       for m in models),
        metered=bool(window))


def _merge(into: dict[str, Decimal], part: dict[str, Decimal]) -> None:
    for k, v in part.items():
        into[k] = into.get(k, ZERO) + v
