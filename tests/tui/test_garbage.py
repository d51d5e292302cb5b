"""The console's memory stays flat and its garbage is freed as it is dropped.

Counted, not timed: live objects after a garbage collection, and what the cycle collector
finds. Each test fails on what it guards against: a widget kept alive by every pause (the
Textual footer's keys did that), render caches that grow with every snapshot (the jobs
table's did), and drawn lines that only the cycle collector can free (Textual's ``Strip``
did; its full collections stalled keys by up to 0.2 s)."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from rich.segment import Segment
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widget import Widget

from bench.console_bench import next_snapshot
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot


def console(engine: FakeEngine) -> MinerConsole:
    return MinerConsole(engine, theme="aitbc-dark", clock=lambda: T0, started_at=T0 - 60,
                        prefs_path=None, tick=None)


def live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def live_widgets() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, Widget))


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The objects only the cycle collector could free, made inside the block."""
    gc.collect()
    found: list[object] = []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def publish(engine: FakeEngine, pilot: Pilot[None], steps: range) -> None:
    for step in steps:
        engine.publish(next_snapshot(engine.snapshot(), step))
        await pilot.pause()


async def test_pausing_and_resuming_keeps_no_widget_alive() -> None:
    engine = FakeEngine(sample_snapshot("busy", n_jobs=8, n_receipts=100))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        await pilot.press("p", "p")
        before = live_widgets()
        for _ in range(10):
            await pilot.press("p", "p")
        await pilot.pause()
        assert [c for c, _ in engine.calls].count("pause") == 11
        assert live_widgets() == before


async def test_snapshots_do_not_grow_the_console() -> None:
    """Eight running jobs change every snapshot (their cells re-rendered each time) and
    receipts arrive. After a warm-up, 100 more snapshots leave as many live objects (within
    1 %) as there were: caches hold what is drawn, not everything ever drawn."""
    engine = FakeEngine(sample_snapshot("busy", n_jobs=8, n_receipts=2000))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        await publish(engine, pilot, range(1, 61))
        warm = live_objects()
        await publish(engine, pilot, range(61, 161))
        grown = live_objects() - warm
        assert grown < warm / 100, f"{grown:,} more live objects than {warm:,}"


async def test_drawn_lines_are_freed_without_the_cycle_collector() -> None:
    engine = FakeEngine(sample_snapshot("busy", n_jobs=8, n_receipts=2000))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        await publish(engine, pilot, range(1, 6))
        with cyclic_garbage() as garbage:
            await publish(engine, pilot, range(6, 26))
        lines = [o for o in garbage if isinstance(o, (Strip, Segment))]
        assert not lines, f"{len(lines)} drawn lines left for the cycle collector"
        assert len(garbage) < 500, Counter(type(o).__name__ for o in garbage).most_common(5)
