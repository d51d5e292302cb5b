"""Console behaviour over a scripted engine: incremental receipts, selection, safety with
engine data, narrow views, a flooding or stalled source, and leaving with the engine."""

from __future__ import annotations

import dataclasses
from typing import Any

from aitbc_miner.engine import Mode
from aitbc_miner.engine.receipt_window import ReceiptWindow
from aitbc_miner.engine.snapshot import JobLogLine, RunningJob
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, receipts, sample_events, sample_snapshot
from tui.screens import QuitScreen
from tui.widgets.keybar import KeyBar
from tui.widgets.receipts import MAX_ROWS

from .conftest import screen_text, until, until_exited


def console(engine: FakeEngine, **kwargs: Any) -> MinerConsole:
    kwargs.setdefault("theme", "aitbc-dark")
    return MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, prefs_path=None, **kwargs)


async def test_receipts_are_added_incrementally_and_capped() -> None:
    snap = sample_snapshot("busy", n_receipts=MAX_ROWS)
    engine = FakeEngine(snap)
    async with console(engine).run_test(size=(120, 34)) as pilot:
        table = pilot.app.dashboard.receipts
        assert len(table) == MAX_ROWS and table.row(0).receipt_id == snap.receipts[0].receipt_id
        added, rebuilds = table.added_total, table.rebuilds
        newer = receipts(3, start=MAX_ROWS, now=T0 + 60)
        engine.publish(dataclasses.replace(snap, seq=2,
                                           receipts=(newer + snap.receipts)[:MAX_ROWS]))
        await until(pilot, lambda: table.row(0).receipt_id == newer[0].receipt_id)
        assert table.added_total - added == 3  # only the new ones, not 10,000 rows again
        assert table.rebuilds == rebuilds
        assert len(table) == MAX_ROWS  # the oldest fell off
        assert table.row(MAX_ROWS - 1).receipt_id == snap.receipts[MAX_ROWS - 4].receipt_id
        engine.publish(dataclasses.replace(snap, seq=3,
                                           receipts=(newer + snap.receipts)[:MAX_ROWS]))
        await pilot.pause()
        assert table.applied == 0


async def test_the_agents_console_shows_the_engines_receipt_window_without_a_copy() -> None:
    # Given the agent's engine, whose snapshots carry its receipt window (10,000 receipts)
    held = sample_snapshot("busy", n_receipts=MAX_ROWS).receipts
    window = ReceiptWindow.of(reversed(held), MAX_ROWS)
    snap = sample_snapshot("busy", n_receipts=0)
    engine = FakeEngine(dataclasses.replace(snap, receipts=window))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        table = pilot.app.dashboard.receipts
        await until(pilot, lambda: len(table) == MAX_ROWS)
        added = table.added_total
        # When three receipts arrive (the engine's next window shares the rest)
        newer = receipts(3, start=MAX_ROWS, now=T0 + 60)
        window = window.extend(reversed(newer))
        engine.publish(dataclasses.replace(snap, seq=2, receipts=window))
        await until(pilot, lambda: table.row(0).receipt_id == newer[0].receipt_id)
        # Then the table shows them on top, counted as three, from the engine's own window
        assert table.added_total - added == 3 and len(table) == MAX_ROWS
        assert table.row(MAX_ROWS - 1) == held[MAX_ROWS - 4]
        assert table._rows is window  # no second copy of 10,000 receipts
        # When the newest receipt is stored again, now not counted (its row replaced)
        again = dataclasses.replace(newer[0], counted=False, verdict="invalid_signature")
        window = window.without(again.receipt_id).push(again)
        engine.publish(dataclasses.replace(snap, seq=3, receipts=window))
        await until(pilot, lambda: not table.row(0).counted)
        # Then the table shows the new row once, in place of the old one
        assert table._rows is window and table.row(0) == again
        assert table.row(1) == newer[1] and table.added_total - added == 3


async def test_the_receipt_selection_survives_new_receipts() -> None:
    snap = sample_snapshot("busy", n_receipts=50)
    engine = FakeEngine(snap)
    async with console(engine).run_test(size=(120, 34)) as pilot:
        table = pilot.app.dashboard.receipts
        table.focus()
        await pilot.press("down", "down", "down")
        chosen = table.selected
        assert chosen is not None and chosen.receipt_id == snap.receipts[3].receipt_id
        newer = receipts(5, start=50, now=T0 + 60)
        engine.publish(dataclasses.replace(snap, seq=2, receipts=newer + snap.receipts))
        await until(pilot, lambda: len(table) == 55)
        assert table.selected is not None and table.selected.receipt_id == chosen.receipt_id
        await pilot.press("home")  # on the newest row, the cursor follows what arrives
        more = receipts(2, start=55, now=T0 + 90)
        engine.publish(dataclasses.replace(snap, seq=3, receipts=more + newer + snap.receipts))
        await until(pilot, lambda: len(table) == 57)
        assert table.selected is not None and table.selected.receipt_id == more[0].receipt_id


async def test_invalid_receipts_say_so_in_words() -> None:
    snap = sample_snapshot("busy")
    async with console(FakeEngine(snap)).run_test(size=(120, 34)) as pilot:
        text = screen_text(pilot.app)
        assert "✗ INVALID" in text and "NOT COUNTED" in text and "✓ pinned" in text


async def test_engine_data_is_never_read_as_markup() -> None:
    snap = sample_snapshot("busy")
    job = RunningJob("[gpu1][b]x", "[red]sleep", "cpu:2", T0 - 5, T0 - 4, "running")
    snap = dataclasses.replace(snap, jobs=snap.jobs + (job,),
                               connection=dataclasses.replace(snap.connection, url="http://[::1]:80"))
    event = JobLogLine(at=T0, job_id="[gpu1][b]x", line="[bold]not bold[/bold]",
                       message="[i]literal[/i] [gpu1]")
    async with console(FakeEngine(snap, [event])).run_test(size=(120, 34)) as pilot:
        await pilot.press("l", "ampersand", *"debug", "enter")  # the log's filter
        await until(pilot, lambda: "[i]literal[/i] [gpu1]" in screen_text(pilot.app))
        text = screen_text(pilot.app)
        assert "[gpu1][b]x" in text and "[red]sleep" in text and "[::1]:80" in text


async def test_the_console_reads_the_engine_once_then_only_listens() -> None:
    engine = FakeEngine(sample_snapshot("busy"))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        await pilot.press("p", "p", "t", "question_mark", "escape", "l", "d", "n", "q", "s")
        await pilot.pause()
    assert engine.snapshot_calls == 1
    assert [c for c, _ in engine.calls] == ["pause", "resume"]


async def test_keys_are_not_queued_behind_a_flood_of_snapshots() -> None:
    """A burst of 1,000 64-job snapshots lands before each key press: the console applies
    only the newest of them, and the key acts. Counted, not timed: a key waits behind
    at most one snapshot, whatever the machine's load."""
    base = sample_snapshot("busy", n_jobs=64, n_receipts=2000)
    engine = FakeEngine(base)
    async with console(engine).run_test(size=(120, 34)) as pilot:
        dashboard = pilot.app.dashboard
        applied: list[int] = []
        show = dashboard.on_applied

        def counted(snap: Any) -> None:
            applied.append(snap.seq)
            if show is not None:
                show(snap)

        dashboard.on_applied = counted
        for _ in range(4):
            before, seq = len(applied), engine._snapshot.seq
            for _ in range(1000):
                seq += 1
                jobs = tuple(dataclasses.replace(j, progress=(("pct", seq % 100),))
                             for j in base.jobs)
                engine.publish(dataclasses.replace(base, seq=seq, jobs=jobs,
                                                   mode=engine._snapshot.mode))
            await pilot.press("p")
            await pilot.pause()
            # none of the burst but its newest was shown; the key's own change came after
            shown = applied[before:]
            assert seq in shown and min(shown) >= seq, f"stale snapshots applied: {shown[:5]}"
        assert [c for c, _ in engine.calls] == ["pause", "resume", "pause", "resume"]


async def test_narrow_terminal_switches_views_with_v() -> None:
    engine = FakeEngine(sample_snapshot("busy"), sample_events())
    async with console(engine).run_test(size=(80, 24)) as pilot:
        dash = pilot.app.dashboard
        assert dash.compact and dash.view == "receipts"
        await until(pilot, lambda: "q Quit" in screen_text(pilot.app))
        text = screen_text(pilot.app)
        for essential in ("RUNNING", "registered", "GPU0", "GPU1", "today 1.2345 AITBC",
                          "3f2a9c01", "9b1c0d2e", "5d6e7f80", "q Quit", "? Help"):
            assert essential in text, essential
        await pilot.press("v")
        assert dash.view == "earnings" and "7 days" in screen_text(pilot.app)
        await pilot.press("v")
        assert dash.view == "events"
        await until(pilot, lambda: "backing off" in screen_text(pilot.app))
        await pilot.resize_terminal(120, 34)
        await until(pilot, lambda: not dash.compact)
        assert "Slots (" in screen_text(pilot.app)


async def test_ctrl_q_goes_through_the_safe_quit() -> None:
    engine = FakeEngine(sample_snapshot("busy"))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        await pilot.press("ctrl+q")
        assert isinstance(pilot.app.screen, QuitScreen)
        await pilot.press("escape")
        assert pilot.app.is_running


async def test_the_console_leaves_when_the_engine_stops() -> None:
    engine = FakeEngine(sample_snapshot("idle"))
    app = console(engine)
    async with app.run_test(size=(120, 34)):
        engine.close()  # e.g. SIGTERM drained and stopped it, or the key was refused
        await until_exited(app, timeout=5)
    assert app.return_code == 0


async def test_drain_then_quit_shows_draining_until_done() -> None:
    engine = FakeEngine(sample_snapshot("busy"))
    app = console(engine)
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("q", "d")
        assert ("drain", (True, None)) in engine.calls
        await until(pilot, lambda: "DRAINING 3 left · then quit" in screen_text(app))
        assert app.is_running
        engine.publish(dataclasses.replace(engine._snapshot, jobs=(), mode=Mode.DRAINED))
        await until_exited(app, timeout=5)


async def test_an_unknown_theme_falls_back_with_a_warning() -> None:
    app = console(FakeEngine(sample_snapshot("idle")), theme="no-such-theme")
    async with app.run_test(size=(80, 24)):
        assert app.theme == "aitbc-dark"
        assert app.theme_problem and "no-such-theme" in app.theme_problem


async def test_without_theme_files_the_console_still_runs() -> None:
    app = console(FakeEngine(sample_snapshot("idle")), themes=[])
    async with app.run_test(size=(80, 24)):
        assert app.theme == "textual-dark" and app.theme_problem


async def test_receipt_details_show_the_stored_receipt_when_the_engine_offers_it() -> None:
    class WithBodies(FakeEngine):
        async def receipt_body(self, receipt_id: str) -> dict[str, Any]:
            return {"receipt_id": receipt_id, "signature": "ed25519:abc", "key_id": "devnet-1"}

    snap = sample_snapshot("busy")
    app = console(WithBodies(snap))
    async with app.run_test(size=(120, 34)) as pilot:
        pilot.app.dashboard.receipts.focus()
        await pilot.press("down", "enter")
        await until(pilot, lambda: "ed25519:abc" in screen_text(app))
        text = screen_text(app)
        assert snap.receipts[1].receipt_id in text and "✗ INVALID" in text
        assert "NOT COUNTED: signature does not verify" in text


async def test_clicking_a_key_in_the_key_bar_presses_it() -> None:
    engine = FakeEngine(sample_snapshot("busy"))
    async with console(engine).run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "p Pause" in screen_text(pilot.app).splitlines()[-1])
        bar = screen_text(pilot.app).splitlines()[-1]
        await pilot.click(KeyBar, offset=(bar.index("p Pause") + 2, 0))
        assert [c for c, _ in engine.calls] == ["pause"]
        await until(pilot, lambda: "p Resume" in screen_text(pilot.app).splitlines()[-1])
