"""The console's memory stays flat and its garbage is freed as it is dropped.

Counted, not timed: live objects after a garbage collection, and what the cycle collector
finds. Each test fails on what it guards against: a widget kept alive by every pause (the
Textual footer's keys did that), render caches that grow with every snapshot (the jobs
table's did), drawn lines that only the cycle collector can free (Textual's ``Strip``
did; its full collections stalled keys by up to 0.2 s), every style drawn (Textual's
escape-code cache kept up to 16,384) and every line Rich cut (as many again)."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Offset, Region
from textual.pilot import Pilot
from textual.strip import Strip
from textual.style import Style as TextualStyle
from textual.widget import Widget

from aitbc_miner.host import allocator
from bench.console_bench import next_snapshot
from tui import render_memory
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


def test_drawing_a_style_keeps_no_copy_of_it() -> None:
    """Each drawn line carries its own styles (the log's option number and each cell's
    offset are in their meta). Once the console exists, turning them into escape codes
    keeps none of them: Textual's own cache kept up to 16,384 (4,400 after 40 minutes of
    the demo)."""
    console(FakeEngine(sample_snapshot("idle")))
    terminal = Console(color_system="truecolor", force_terminal=True)

    def draw(n: int) -> str:
        return Strip([Segment("12:00:00", Style(color="red", meta={"probe": n})),
                      Segment(" job done", Style(bold=True, meta={"probe": n}))]).render(terminal)

    for n in range(500):
        assert "\x1b[31m12:00:00" in draw(n)
    gc.collect()
    kept = [o for o in gc.get_objects() if type(o) is Style and "probe" in o.meta]
    assert not kept, f"{len(kept)} drawn styles kept"


def test_cutting_a_line_keeps_no_copy_of_it() -> None:
    """Rich caches how it cuts a line holding a character such as ``…``, by the line; the
    console keeps a few screens of those, not the 16,384 lines Rich would."""
    console(FakeEngine(sample_snapshot("idle")))
    style = Style(bold=True)

    def cut(n: int) -> str:
        left, right = Segment(f"job {n:05d} … probed", style).split_cells(6)
        return left.text

    for n in range(5000):
        assert cut(n) == f"job {n:05d}"[:6]
    gc.collect()
    kept = [o for o in gc.get_objects() if type(o) is Segment and "probed" in o.text]
    assert len(kept) <= 2 * render_memory.SPLIT_CACHE_SIZE, f"{len(kept)} cut lines kept"


@pytest.mark.skipif(allocator.heap() is None, reason="reads glibc's malloc")
def test_a_kept_styles_meta_leaves_no_hole_in_mallocs_heap() -> None:
    """Rich and Textual pickle a style's meta, and ``pickle.dumps`` shrinks a 4 KB buffer
    in place to its answer. Given free 4 KB pieces between live blocks (as a long run leaves
    them), each kept style took one and left a piece too small for the next 4 KB buffer, so
    the heap grew by 4 KB a style (7.9 MiB here). Once the console exists, it does not."""
    console(FakeEngine(sample_snapshot("idle")))
    n = 2000
    pieces = [(bytes(4096), bytes(1024)) for _ in range(n)]
    guards = [guard for _, guard in pieces]
    del pieces
    before = allocator.heap()
    kept = [(Style(meta={"@click": f"app.show_job('j{i}')", "row": i}),
             TextualStyle.from_meta({"offset": (i, 0)})) for i in range(n)]
    buffers = [bytes(4096) for _ in range(n)]  # would fit the pieces, if still whole
    after = allocator.heap()
    assert before is not None and after is not None
    grew = after.arena - before.arena
    assert all(style.meta["row"] == i for i, (style, _) in enumerate(kept))
    assert len(guards) == len(buffers) == n
    assert grew < 1024 * 1024, f"the heap grew {grew / 2**20:.1f} MiB for {n} kept styles"


def test_testing_points_against_regions_keeps_none_of_them() -> None:
    """Textual cached each (region, point) it tested, up to 4,096 pairs; the console keeps
    none, and the answers are Textual's."""
    console(FakeEngine(sample_snapshot("idle")))
    for n in range(5000):
        region = Region(n, 987_654, 2, 1)
        assert Offset(n + 1, 987_654) in region and Offset(n + 2, 987_654) not in region
        assert "not a point" not in region
    del region
    gc.collect()
    kept = [o for o in gc.get_objects() if type(o) is Region and o.y == 987_654]
    assert not kept, f"{len(kept)} tested regions kept"
