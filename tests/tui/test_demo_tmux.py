"""The installed ``aitbc-miner demo`` in a real terminal (tmux): jobs complete, ``p``
shows PAUSED, ``q`` quits cleanly (exit code 0) and nothing is left running."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(TMUX is None,
                                 reason="tmux is not installed (apt-get install tmux)")]


def miner_command() -> str:
    """The installed console script: beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "aitbc-miner"
    found = str(beside) if beside.exists() else shutil.which("aitbc-miner")
    if found is None:
        pytest.fail("aitbc-miner is not installed: pip install -e . (or pip install .)")
    return found


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.socket = f"aitbc-test-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp

    def __call__(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "demo")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"not on screen within {timeout}s: {what}\n{text}")

    def kill(self) -> None:
        subprocess.run([str(TMUX), "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(tmp_path)
    yield session
    session.kill()


def processes_marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (the demo and anything it started)."""
    found = []
    needle = f"AITBC_TUI_TEST_MARK={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(180)
def test_demo_in_tmux_pause_then_quit_cleanly(tmux: Tmux, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    rc_file = tmp_path / "rc"
    env = {"AITBC_TUI_TEST_MARK": marker, "XDG_STATE_HOME": str(tmp_path / "state"),
           "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    command = (f"env {' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())} "
               f"{shlex.quote(miner_command())} demo; echo $? > {shlex.quote(str(rc_file))}; "
               "sleep 60")
    tmux("new-session", "-d", "-s", "demo", "-x", "120", "-y", "34", command)

    # Jobs run and complete: receipts arrive, verified against the pinned key.
    def receipts_shown(text: str) -> bool:
        match = re.search(r"Receipts \((\d+)", text)
        return bool(match and int(match.group(1)) >= 2 and "✓ pinned" in text)

    screen = tmux.wait_for(receipts_shown, 45, "completed jobs with receipts")
    assert "RUNNING" in screen.splitlines()[0] and "registered" in screen

    tmux("send-keys", "-t", "demo", "p")
    screen = tmux.wait_for(lambda t: "PAUSED" in t.splitlines()[0], 10, "PAUSED in the header")
    assert "p Resume" in screen

    tmux("send-keys", "-t", "demo", "q")
    deadline = time.monotonic() + 60
    answered = False
    while not rc_file.exists() and time.monotonic() < deadline:
        if not answered and "still running" in tmux.screen():
            tmux("send-keys", "-t", "demo", "d")  # drain first: no result is lost
            answered = True
        time.sleep(0.25)
    assert rc_file.exists(), f"the console did not quit:\n{tmux.screen()}"
    assert rc_file.read_text().strip() == "0"
    for _ in range(40):
        left = processes_marked(marker)
        if not left:
            break
        time.sleep(0.25)
    assert not left, f"still running after quitting: {left}"
    assert os.path.exists(rc_file)
