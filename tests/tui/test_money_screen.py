"""The money screen (key ``e``): rates, the hourly chart, per-GPU and per-model earnings,
the failure rate by code and profitability, following the engine while open."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from aitbc_miner.money import Money
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_events, sample_snapshot
from tui.money_screen import MoneyScreen, hourly_chart

from .conftest import screen_text, screenshot, until


def console(kind: str = "busy") -> tuple[MinerConsole, FakeEngine]:
    engine = FakeEngine(sample_snapshot(kind), sample_events())
    app = MinerConsole(engine, theme="aitbc-dark", clock=lambda: T0, started_at=T0 - 7980,
                       prefs_path=None, tick=None)
    return app, engine


async def test_e_opens_the_money_screen_which_follows_the_engine_and_closes() -> None:
    app, engine = console()
    async with app.run_test(size=(120, 34)) as pilot:
        # When the operator presses e
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, MoneyScreen), what="money screen")
        text = screen_text(app)
        # Then it shows the rates, the chart, the splits, failures and profitability
        for words in ("AITBC per hour  now 0.3420", "last hour 0.3100", "last day 0.2871",
                      "by GPU", "gpu:0", "by model", "llama3.2",
                      "last hour: 6.7% failed of 15 finished", "E_TIMEOUT 1",
                      "Profitability  0.30 EUR/kWh · 1 AITBC = 2.50 EUR", "0.6878 gain",
                      "-0.0122 LOSS"):
            assert words in text, words
        # And it follows the engine: a new snapshot's earnings show while it is open
        snap = engine.snapshot()
        engine.publish(dataclasses.replace(snap, seq=snap.seq + 1, earnings=dataclasses.replace(
            snap.earnings, per_hour_now=Decimal("9.75"))))
        await until(pilot, lambda: "now 9.7500" in screen_text(app), what="followed")
        # And e (or Esc) closes it, back to the dashboard
        await pilot.press("e")
        await until(pilot, lambda: not isinstance(app.screen, MoneyScreen), what="closed")


async def test_without_a_price_the_screen_says_how_to_get_profitability() -> None:
    app, engine = console()
    snap = engine.snapshot()
    engine.publish(dataclasses.replace(snap, earnings=dataclasses.replace(
        snap.earnings, profit=None)))
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("e")
        await until(pilot, lambda: "earnings.power_price_per_kwh" in screen_text(app),
                    what="hint")


def test_the_hourly_chart_scales_to_the_best_hour_and_never_hides_a_small_one() -> None:
    hours = tuple((int(T0) - (23 - h) * 3600, Money(Decimal(h == 23) + Decimal("0.001"), 1))
                  for h in range(24))
    lines = hourly_chart(hours, rows=4)
    assert lines[0].endswith("top bar 1.0010") and "local time" in lines[0]
    assert lines[1] == "   " * 23 + "██"
    assert lines[4].startswith("▁▁ ▁▁ ")  # 0.001 of 1.001 still shows
    assert lines[5].startswith("13       16")
    assert hourly_chart(tuple((int(T0), Money()) for _ in range(24))) == [
        "no earnings in the last 24 hours"]


async def test_money_screen_at_120x34(svg_snapshot: Any) -> None:
    app, _ = console()
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, MoneyScreen), what="money screen")
        assert svg_snapshot == await screenshot(pilot)
