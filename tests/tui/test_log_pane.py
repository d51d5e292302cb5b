"""The log pane (issue 11): follow and pause, search with n/N, the filter kept, wrap, save,
the whole of a long event on enter with its flag first, and keys typed right after ``/``
going into the input line, never to the dashboard's command keys."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from textual import events
from textual.widgets import Input

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine.outbox import exact_aitbc
from aitbc_miner.engine.snapshot import (
    BackingOff,
    DiskFloorCrossed,
    Event,
    JobFinished,
    ReceiptStored,
)
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot
from tui.screens import LogLineScreen
from tui.widgets.events import EventLog, EventsPanel

from .conftest import RICH_TERMINAL, screen_text, until

LONG = ("receipt 3f2a9c01d2e34f5a9b1c0d2e77aa4410 for job 5d6e7f80aa11bb22cafe00001234abcd: "
        "0.0236 AITBC, valid_pinned POSSIBLE DUPLICATE: /result was resent after an uncertain "
        "delivery; counted once, the coordinator may hold a second receipt END-OF-THE-LINE")


def done(i: int) -> JobFinished:
    return JobFinished(at=T0, job_id=f"job{i:05d}", outcome="completed",
                       message=f"job job{i:05d} completed")


def disk(low: bool) -> DiskFloorCrossed:
    return DiskFloorCrossed(at=T0, low=low, path="/data", free_mb=90, floor_mb=500,
                            message=f"data disk {'below' if low else 'back over'} its floor")


def console(engine: FakeEngine, tmp_path: Path | None = None) -> MinerConsole:
    return MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, theme="aitbc-dark",
                        prefs_path=tmp_path / "state" / "console.json" if tmp_path else None,
                        environ=RICH_TERMINAL)


async def opened(pilot: Any, app: MinerConsole, n: int) -> tuple[EventsPanel, EventLog]:
    """The log focused (``l``) once it shows ``n`` lines."""
    panel = app.dashboard.events
    await until(pilot, lambda: panel.log_view.option_count == n, what=f"{n} log lines")
    await pilot.press("l")
    assert isinstance(app.focused, EventLog)
    return panel, panel.log_view


def lines(log: EventLog) -> list[str]:
    return [log.get_option_at_index(i).prompt.plain for i in range(log.option_count)]


async def test_follow_pauses_and_counts_what_is_new(tmp_path: Path) -> None:
    engine = FakeEngine(sample_snapshot("busy"), [done(i) for i in range(5)])
    app = console(engine)
    async with app.run_test(size=(120, 34)) as pilot:
        panel, log = await opened(pilot, app, 5)
        assert panel.following and log.highlighted == 4
        assert panel.border_subtitle.startswith("f follow · / search")  # the log's keys
        await pilot.press("f")
        assert not panel.following and "paused, 0 new" in panel.border_title
        for i in range(5, 8):
            engine.emit(done(i))
        await until(pilot, lambda: "paused, 3 new" in panel.border_title)
        assert log.option_count == 5 and log.highlighted == 4  # the view held still
        await pilot.press("f")
        assert panel.following and "paused" not in panel.border_title
        assert log.option_count == 8 and log.highlighted == 7
        await pilot.press("up")  # moving up pauses; end follows again
        assert not panel.following and log.highlighted == 6
        engine.emit(done(8))
        await until(pilot, lambda: "paused, 1 new" in panel.border_title)
        await pilot.press("end")
        assert panel.following and log.option_count == 9 and log.highlighted == 8


async def test_search_highlights_matches_and_n_moves_between_them() -> None:
    events: list[Event] = [done(0), disk(True), done(1), done(2), disk(False), done(3)]
    app = console(FakeEngine(sample_snapshot("busy"), events))
    async with app.run_test(size=(120, 34)) as pilot:
        panel, log = await opened(pilot, app, 6)
        await pilot.press("slash", *"DATA DISK", "enter")
        assert panel.search == "DATA DISK" and isinstance(app.focused, EventLog)
        assert log.highlighted == 4 and '"DATA DISK" 2/2' in panel.border_title  # the newest
        prompt = log.get_option_at_index(1).prompt
        marked = [prompt.plain[s.start:s.end] for s in prompt.spans if "bold" in str(s.style)
                  and s.style.bgcolor is not None]  # type: ignore[union-attr]
        assert marked == ["data disk"]  # found whatever the case
        await pilot.press("n")
        assert log.highlighted == 1 and '"DATA DISK" 1/2' in panel.border_title
        await pilot.press("n")
        assert log.highlighted == 4
        await pilot.press("N")
        assert log.highlighted == 1
        # the level filter still works beside the search: & in the log
        await pilot.press("ampersand", *"warn", "enter")
        assert panel.filter.min_level == "WARNING" and lines(log) == [
            lines(log)[0]] and "DISK LOW" in lines(log)[0]
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter")
        assert panel.search == "" and "DATA DISK" not in panel.border_title


async def test_a_long_event_keeps_its_flag_first_and_opens_whole() -> None:
    event = ReceiptStored(at=T0, job_id="5d6e7f80aa11bb22cafe00001234abcd",
                          receipt_id="3f2a9c01d2e34f5a9b1c0d2e77aa4410", price=0.0236,
                          verdict="valid_pinned", counted=True, duplicate=True, message=LONG)
    app = console(FakeEngine(sample_snapshot("busy"), [done(0), event]))
    async with app.run_test(size=(100, 30)) as pilot:
        panel, log = await opened(pilot, app, 2)
        shown = screen_text(app)
        assert "WARN   POSSIBLE DUPLICATE  receipt 3f2a" in shown  # the flag leads the line
        assert "END-OF-THE-LINE" not in shown  # the line itself is cut...
        await pilot.press("enter")  # ...and enter shows it whole
        assert isinstance(app.screen, LogLineScreen)
        whole = screen_text(app)
        assert "END-OF-THE-LINE" in whole and "POSSIBLE DUPLICATE" in whole
        body = app.screen.body().plain
        assert LONG in body
        for field in ("receipt_id", "verdict", "counted", "duplicate", "price"):
            assert field in body
        assert "true" in body  # counted and duplicate, as JSON
        await pilot.press("escape")
        assert not isinstance(app.screen, LogLineScreen) and isinstance(app.focused, EventLog)


async def test_w_wraps_long_lines_and_back() -> None:
    long = BackingOff(at=T0, loop="poll", delay_s=2.1, attempt=3, reason="503",
                      message="coordinator answered 503; " + "backing off a while " * 12)
    app = console(FakeEngine(sample_snapshot("busy"), [done(0), long]))
    async with app.run_test(size=(120, 34)) as pilot:
        panel, log = await opened(pilot, app, 2)
        await pilot.pause()
        assert log.virtual_size.height == 2
        await pilot.press("w")
        await pilot.pause()
        assert panel.wrap and log.has_class("-wrap") and "wrapped" in panel.border_title
        assert log.virtual_size.height > 2  # the long line takes several rows
        await pilot.press("w")
        await pilot.pause()
        assert not panel.wrap and log.virtual_size.height == 2


async def test_ctrl_s_saves_the_filtered_log_and_says_where(tmp_path: Path) -> None:
    events: list[Event] = [done(0), disk(True), done(1), ReceiptStored(
        at=T0, job_id="j2", receipt_id="r2", price=0.02, verdict="invalid_signature",
        counted=False, duplicate=False, message="receipt r2: invalid signature; not counted")]
    app = console(FakeEngine(sample_snapshot("busy"), events), tmp_path)
    async with app.run_test(size=(120, 34), notifications=True) as pilot:
        panel, log = await opened(pilot, app, 4)
        await pilot.press("ampersand", *"warn", "enter", "ctrl+s")
        await until(pilot, lambda: panel.saved_to is not None, what="the saved file")
        saved = panel.saved_to
        assert saved is not None and saved.parent == tmp_path / "state"
        assert saved.name == "events-20260101-120000.log"
        text = saved.read_text(encoding="utf-8").splitlines()
        assert len(text) == 2  # the filter's two lines, whole, with their fields
        assert "WARNING disk_floor [DISK LOW] data disk below its floor" in text[0]
        assert text[1].startswith("2026-01-01T12:00:00.000 ERROR   receipt_stored [NOT COUNTED]")
        assert '"verdict": "invalid_signature"' in text[1]
        await until(pilot, lambda: "saved 2 events" in screen_text(app), what="the toast")
        assert str(saved) in " ".join(screen_text(app).split()) or saved.name in screen_text(app)
        await pilot.press("ctrl+s")  # a second save never overwrites the first
        await until(pilot, lambda: panel.saved_to != saved)
        assert panel.saved_to is not None and panel.saved_to.name == "events-20260101-120000-2.log"


def type_at_once(app: MinerConsole, *keys: str) -> None:
    """Queue keys as a fast typist's terminal does: all of them before the app has handled
    the first (``pilot.press`` lets the app go idle between keys)."""
    chars = {"slash": "/", "ampersand": "&"}
    for key in keys:
        event = events.Key(key, chars.get(key, key))
        event.set_sender(app)
        app.post_message(event)


async def test_keys_typed_right_after_slash_go_into_the_input() -> None:
    engine = FakeEngine(sample_snapshot("busy"))
    app = console(engine)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "RUNNING" in screen_text(app))
        assert not isinstance(app.focused, Input)  # the jobs table: p pauses there
        await pilot.press("slash", "p", "x")
        assert isinstance(app.focused, Input) and app.focused.value == "px"
        assert engine.calls == []  # no pause was sent
        await pilot.press("escape")
        # in the log, / searches and & filters: the letters after either go into the line
        await pilot.press("l", "slash", "p", "d", "c")
        search = app.query_one("#event-search", Input)
        assert app.focused is search and search.value == "pdc"
        await pilot.press("escape", "ampersand", "p", "D", "c")
        box = app.query_one("#event-filter", Input)
        assert app.focused is box and box.value == "pDc"
        assert engine.calls == []
        # typed faster than the app handles them: queued before the / is handled
        await pilot.press("escape", "escape")
        app.set_focus(app.dashboard.jobs)
        type_at_once(app, "l", "slash", "p", "x")
        await pilot.pause()
        assert app.focused is search and search.value == "px"
        await pilot.press("escape")
        assert isinstance(app.focused, EventLog)
        type_at_once(app, "ampersand", "d", "c")
        await pilot.pause()
        assert app.focused is box and box.value == "dc"
        assert engine.calls == [] and app.screen is app.screen_stack[0]  # no drain dialog


async def test_a_resent_result_reads_possible_duplicate_first(live: Any, devnet: Devnet) -> None:
    # Given a 2026-01 coordinator that commits the next /result and then drops the answer
    # (the miner resends, per policy, and flags the one receipt it gets)
    await devnet.submit_job({"type": "sha256", "data": "x"})
    devnet.inject("result", "drop_after")
    engine, app = await live(cpu=1)
    async with app.run_test(size=(100, 30)) as pilot:
        panel = app.dashboard.events
        await until(pilot, lambda: any(e.name == "receipt_stored" for e in panel.events),
                    timeout=20, what="the receipt's event")
        event = next(e for e in panel.events if e.name == "receipt_stored")
        # Then the engine's own message leads with the flag, its price in plain digits
        assert event.message.startswith("POSSIBLE DUPLICATE: receipt ")
        assert " AITBC, valid_" in event.message and "e-0" not in event.message
        # and the console's line shows the flag first, as a warning, whatever its width
        log = panel.log_view
        line = next(log.get_option_at_index(i).prompt.plain for i in range(log.option_count)
                    if "receipt" in log.get_option_at_index(i).prompt.plain)
        assert line[9:].startswith("WARN   POSSIBLE DUPLICATE  receipt ")  # said once


def test_prices_in_engine_messages_are_plain_digits() -> None:
    assert exact_aitbc(2e-05) == "0.00002 AITBC"
    assert exact_aitbc(Decimal("0.02836")) == "0.02836 AITBC"
    assert exact_aitbc(None) == "no price"
