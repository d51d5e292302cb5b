"""Standing warnings from the engine (jobs not sandboxed, process jobs refused) lead line 2
of the header, at every size, in the error colour."""

from __future__ import annotations

import dataclasses

import pytest

from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot

from .conftest import screen_text, until

OFF = "ISOLATION OFF: process jobs run without a sandbox (runners.isolation: none)"


@pytest.mark.parametrize(("size", "words"), [
    ((200, 50), "ISOLATION OFF: process jobs run without a sandbox"),
    ((80, 24), "ISOLATION OFF"),
], ids=["wide", "narrow"])
async def test_a_standing_warning_leads_the_header(size: tuple[int, int], words: str) -> None:
    snap = sample_snapshot("idle")
    engine = FakeEngine(dataclasses.replace(snap, warnings=(OFF,)))
    app = MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, prefs_path=None,
                       theme="aitbc-dark")
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: " RUNNING " in screen_text(app))
        line_two = screen_text(app).splitlines()[1]
        assert words in line_two and line_two.lstrip().startswith("ISOLATION OFF")
        # And it goes when the engine stops reporting it
        engine.publish(dataclasses.replace(snap, seq=2))
        await until(pilot, lambda: "ISOLATION OFF" not in screen_text(app))
