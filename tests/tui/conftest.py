"""Fixtures for the console tests: a frozen time zone, SVG snapshots, and consoles over
either a hand-made ``FakeEngine`` (snapshot tests) or a real Engine + devnet (keys)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine import Engine, Link
from tui.app import MinerConsole


@pytest.fixture(params=[Dialect.V2026_01], ids=["2026-01"])
def dialect(request: pytest.FixtureRequest) -> Dialect:
    """The console does not care about the wire dialect: one is enough here."""
    return request.param


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times of day render the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


#: A 256-colour UTF-8 terminal: the console's automatic choices (theme, ASCII) off.
RICH_TERMINAL = {"TERM": "xterm-256color", "LANG": "C.UTF-8"}


class SVGExtension(SingleFileSnapshotExtension):
    file_extension = "svg"
    _write_mode = WriteMode.TEXT


@pytest.fixture
def svg_snapshot(snapshot: Any) -> Any:
    """``assert svg_snapshot == await screenshot(pilot)`` (syrupy prints the diff)."""
    return snapshot.use_extension(SVGExtension)


async def screenshot(pilot: Any) -> str:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    return re.sub(r"\bterminal-\d+-([\w-]+)", r"terminal-\1", pilot.app.export_screenshot())


def screen_text(app: MinerConsole) -> str:
    """What the terminal shows now, as plain text (the active screen, dialogs included)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def until(pilot: Any, predicate: Callable[[], bool], timeout: float = 10.0,
                what: str = "") -> None:
    """Let the app run until ``predicate()`` holds (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            text = screen_text(pilot.app) if pilot.app.is_running else "(app not running)"
            raise AssertionError(f"not true within {timeout}s: {what or predicate}\n{text}")
        await pilot.pause(0.02)


async def until_exited(app: MinerConsole, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while app.is_running or app.return_code is None:
            await asyncio.sleep(0.02)


@pytest.fixture
def console_factory(tmp_path: Path) -> Callable[..., MinerConsole]:
    def make(engine: Any, **kwargs: Any) -> MinerConsole:
        kwargs.setdefault("theme", "aitbc-dark")
        kwargs.setdefault("prefs_path", tmp_path / "state" / "console.json")
        kwargs.setdefault("environ", RICH_TERMINAL)  # not the test runner's TERM and LANG
        return MinerConsole(engine, **kwargs)

    return make


@pytest.fixture
async def live(devnet: Devnet, make_engine: Any, run_engine: Any,
               console_factory: Callable[..., MinerConsole]) -> AsyncIterator[Callable[..., Any]]:
    """``engine, app = await live(cpu=2)``: a registered real engine and a console over it."""

    async def start(*, cpu: int = 2, **console_kwargs: Any) -> tuple[Engine, MinerConsole]:
        engine = make_engine(devnet.url, cpu=cpu, pinned_key=devnet.public_key_id)
        run_engine(engine)
        await engine.wait_until(lambda s: s.connection.link is Link.REGISTERED, timeout=10)
        return engine, console_factory(engine, **console_kwargs)

    yield start
