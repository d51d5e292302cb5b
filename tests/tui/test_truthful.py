"""Problems look like problems, and the words never contradict the data (issue 11): failed
jobs are WARN/ERROR, badge and link agree, a 503 is not "unreachable", waiting jobs are
not counted as running, small prices keep their digits, ASCII under a non-UTF-8 locale,
the 16-colour theme on a 16-colour terminal, "starting" before the engine has started."""

from __future__ import annotations

import dataclasses

import pytest

from aitbc_miner.engine.snapshot import (
    JobFinished,
    Link,
    Mode,
    ReceiptView,
    SlotState,
    Snapshot,
)
from tui import fmt
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, sample_snapshot
from tui.screens import ReceiptDetailsScreen
from tui.theming import few_colours
from tui.widgets.header import line_two, mode_badge

from .conftest import RICH_TERMINAL, screen_text, until


def console(snap: Snapshot, environ: dict[str, str] = RICH_TERMINAL, **kwargs: object
            ) -> MinerConsole:
    kwargs.setdefault("theme", "aitbc-dark")
    return MinerConsole(FakeEngine(snap), clock=lambda: T0, started_at=T0 - 60,
                        prefs_path=None, environ=environ, **kwargs)  # type: ignore[arg-type]


def finished(outcome: str, code: str | None = None) -> JobFinished:
    return JobFinished(at=T0, job_id="71de33aa", outcome=outcome, code=code)


def test_failed_jobs_are_warnings_and_rig_faults_errors() -> None:
    assert fmt.display_level(finished("completed")) == "INFO"
    assert fmt.display_level(finished("canceled", "E_CANCELED")) == "INFO"
    assert fmt.display_level(finished("failed", "E_TIMEOUT")) == "WARNING"
    assert fmt.display_level(finished("interrupted", "E_INTERRUPTED")) == "WARNING"
    for code in ("E_INTERNAL", "E_SANDBOX_UNAVAILABLE", "E_DISK"):
        assert fmt.display_level(finished("failed", code)) == "ERROR"


def _offline(reason: str) -> Snapshot:
    snap = sample_snapshot("offline")
    return dataclasses.replace(snap, connection=dataclasses.replace(snap.connection,
                                                                    reason=reason))


@pytest.mark.parametrize("link", [Link.BACKING_OFF, Link.AUTH_REFUSED, Link.CONNECTING])
def test_running_is_green_only_while_the_link_is_up(link: Link) -> None:
    snap = sample_snapshot("idle")
    assert mode_badge(snap) == (" RUNNING ", "bold $background on $success")
    down = dataclasses.replace(snap, connection=dataclasses.replace(snap.connection, link=link))
    words, style = mode_badge(down)
    assert "$success" not in style and "$warning" in style
    assert words.strip().startswith("RUNNING · ")


def test_a_503_is_an_answer_and_a_refused_connection_unreachable() -> None:
    answered = line_two(_offline("/v1/miners/poll: 503 Service Unavailable"), False).plain
    assert "coordinator answers 503" in answered and "unreachable" not in answered
    assert "answers 503" in line_two(_offline("/v1/miners/poll: 503 busy"), True).plain
    refused = line_two(_offline("/v1/miners/poll: connect error: connection refused"),
                       False).plain
    assert "coordinator unreachable" in refused and "answers" not in refused
    assert mode_badge(_offline("/v1/miners/poll: connect timeout"))[0] == " RUNNING · offline "


def test_receipt_words_agree_with_counted() -> None:
    r = ReceiptView("r1", "j1", T0, 1.0, "gpu_seconds", 0.02, "valid_pinned", "", counted=True,
                    duplicate=True)
    summary = ReceiptDetailsScreen(r, engine=None)._summary()
    assert "not counted" not in summary.lower() and "counted" in summary
    assert "✗" not in fmt.verdict(r.verdict, r.counted, r.duplicate)
    dropped = dataclasses.replace(r, counted=False)
    assert "not counted" in ReceiptDetailsScreen(dropped, engine=None)._summary()
    assert fmt.verdict(dropped.verdict, False, True) == "✗ DUPLICATE"


def test_small_amounts_keep_their_digits() -> None:
    assert fmt.money(2e-05) == "0.0000200"
    assert fmt.money(0.000123456, "AITBC") == "0.000123 AITBC"
    assert fmt.money(0.0622) == "0.0622"
    assert fmt.money(1234.5) == "1,234.5000"
    assert fmt.money(0.0) == "0.0000"
    assert "e" not in fmt.money(1e-11)


async def test_the_quit_dialog_counts_waiting_jobs_apart() -> None:
    snap = sample_snapshot("busy")
    waiting = dataclasses.replace(snap.jobs[0], job_id="aa00bb11cc22dd33", slot_id=None,
                                  started_at=None, state="queued")
    snap = dataclasses.replace(snap, jobs=(*snap.jobs, waiting, dataclasses.replace(
        waiting, job_id="ee44ff5500112233")))
    app = console(snap)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "RUNNING" in screen_text(app))
        await pilot.press("q")
        await until(pilot, lambda: "Quit without losing" in screen_text(app))
        text = screen_text(app)
        assert "3 jobs are still running and 2 waiting for a slot" in text
        assert "DRAINING 5 left" in text


async def test_ascii_under_a_locale_that_is_not_utf8() -> None:
    snap = sample_snapshot("busy")
    app = console(snap, environ={"TERM": "xterm-256color", "LANG": "C"})
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "RUNNING" in screen_text(app))
        text = screen_text(app)
        assert text.isascii(), [ch for ch in text if not ch.isascii()][:10]
        assert "+-" in text and " . " in text and "|" in text
    unicode = console(snap, environ={"TERM": "xterm-256color", "LC_ALL": "en_US.UTF-8",
                                     "LANG": "C"})
    async with unicode.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "RUNNING" in screen_text(unicode))
        assert "│" in screen_text(unicode) and "·" in screen_text(unicode)


@pytest.mark.parametrize(("env", "theme"), [
    ({"TERM": "linux"}, "aitbc-ansi"),
    ({"TERM": "xterm"}, "aitbc-ansi"),
    ({"TERM": "xterm-256color"}, "aitbc-dark"),
    ({"TERM": "xterm", "COLORTERM": "truecolor"}, "aitbc-dark"),
    ({"TERM": "xterm-256color", "TEXTUAL_COLOR_SYSTEM": "standard"}, "aitbc-ansi"),
])
async def test_a_16_colour_terminal_gets_the_16_colour_theme(env: dict[str, str],
                                                             theme: str) -> None:
    env = {"LANG": "C.UTF-8", **env}
    app = console(sample_snapshot("idle"), environ=env, theme=None, default_theme="aitbc-dark")
    async with app.run_test(size=(80, 24)):
        assert app.theme == theme
    assert few_colours(env) is (theme == "aitbc-ansi")
    chosen = console(sample_snapshot("idle"), environ=env, theme="aitbc-light")
    async with chosen.run_test(size=(80, 24)):
        assert chosen.theme == "aitbc-light"  # the operator's choice wins


async def test_starting_is_not_paused() -> None:
    snap = sample_snapshot("idle")
    starting = dataclasses.replace(snap, mode=Mode.STARTING, slots=tuple(
        dataclasses.replace(s, state=SlotState.PAUSED) for s in snap.slots))
    engine = FakeEngine(starting)
    app = MinerConsole(engine, clock=lambda: T0, started_at=T0 - 60, prefs_path=None,
                       theme="aitbc-dark", environ=RICH_TERMINAL)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: "STARTING" in screen_text(app))
        text = screen_text(app)
        assert "4 starting" in text and "paused" not in text.lower()
        engine.publish(dataclasses.replace(starting, seq=2, mode=Mode.PAUSED))
        await until(pilot, lambda: "PAUSED" in screen_text(app))
        assert "4 paused" in screen_text(app)
