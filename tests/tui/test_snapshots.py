"""A few meaningful screenshots, deterministic run after run: hand-made snapshots from a
``FakeEngine``, a frozen clock (ages, uptime, elapsed), UTC, no ticking timer, no toasts.

Update after an intended change: ``pytest tests/tui --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_events, sample_snapshot

from .conftest import screenshot


def frozen_console(kind: str, theme: str = "aitbc-dark", **snap_kwargs: Any) -> MinerConsole:
    engine = FakeEngine(sample_snapshot(kind, **snap_kwargs), sample_events())
    return MinerConsole(engine, theme=theme, clock=lambda: T0, started_at=T0 - 7980,
                        prefs_path=None, tick=None)


async def settle(pilot: Any) -> None:
    """Wait until the event log has taken the fake's events (its worker runs on its own)."""
    panel = pilot.app.dashboard.events
    for _ in range(200):
        if len(panel.events) == len(sample_events()):
            break
        await pilot.pause(0.01)
    await pilot.pause()


@pytest.mark.parametrize("kind", ["idle", "busy", "paused", "draining", "lost_gpu", "offline"])
async def test_states_at_120x34(kind: str, svg_snapshot: Any) -> None:
    app = frozen_console(kind)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        assert svg_snapshot == await screenshot(pilot)


async def test_narrow_80x24_keeps_the_essentials(svg_snapshot: Any) -> None:
    app = frozen_console("lost_gpu")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert svg_snapshot == await screenshot(pilot)


@pytest.mark.parametrize("theme", ["aitbc-light", "aitbc-ansi"])
async def test_other_themes(theme: str, svg_snapshot: Any) -> None:
    app = frozen_console("busy", theme=theme)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        assert svg_snapshot == await screenshot(pilot)


async def test_wide_200x50_with_many_jobs(svg_snapshot: Any) -> None:
    app = frozen_console("busy", n_jobs=16, n_receipts=60)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        assert svg_snapshot == await screenshot(pilot)
