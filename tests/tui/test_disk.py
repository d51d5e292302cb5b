"""The console header when the data disk is under its free-space floor: the badge says the
miner is not claiming, line 2 says why, and both clear when space returns."""

from __future__ import annotations

import dataclasses

import pytest

from aitbc_miner.engine.snapshot import DiskView
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot

from .conftest import screen_text, until

LOW = DiskView(path="/var/lib/aitbc-miner/data/jobs", free_mb=312.5, floor_mb=512.0, low=True,
               reason="data disk low: 312.5 MB free on /var/lib/aitbc-miner/data/jobs, under "
               "the 512 MB floor; not claiming")
OK = dataclasses.replace(LOW, free_mb=600.0, low=False, reason=None)


@pytest.mark.parametrize(("size", "words"), [
    ((200, 50), "data disk low: 312.5 MB free, floor 512 MB"),
    ((80, 24), "DISK LOW 312.5/512 MB"),
], ids=["wide", "narrow"])
async def test_a_low_data_disk_shows_in_the_header_until_space_returns(
        size: tuple[int, int], words: str) -> None:
    snap = sample_snapshot("idle")
    engine = FakeEngine(snap)
    app = MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, prefs_path=None,
                       theme="aitbc-dark")
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: " RUNNING " in screen_text(app))
        assert "not claiming" not in screen_text(app)
        # When the engine reports the data disk under its floor
        engine.publish(dataclasses.replace(snap, seq=2, disk=LOW))
        # Then the badge and line 2 say so
        await until(pilot, lambda: "RUNNING · not claiming" in screen_text(app))
        assert words in screen_text(app)
        # When space returns, both clear
        engine.publish(dataclasses.replace(snap, seq=3, disk=OK))
        await until(pilot, lambda: "not claiming" not in screen_text(app))
        assert words not in screen_text(app)
