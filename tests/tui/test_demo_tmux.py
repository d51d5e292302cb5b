"""The installed ``aitbc-miner demo`` in a real terminal (tmux): jobs complete, ``p``
shows PAUSED, ``q`` quits cleanly (exit code 0) and nothing is left running."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.terminal import MARK, Tmux, miner_command, needs_tmux, processes_marked, shell_command
from tests.terminal import tmux as tmux  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.slow, needs_tmux]


@pytest.mark.timeout(180)
def test_demo_in_tmux_pause_then_quit_cleanly(tmux: Tmux, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    rc_file = tmp_path / "rc"
    env = {MARK: marker, "XDG_STATE_HOME": str(tmp_path / "state"),
           "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    tmux.start("demo", shell_command([miner_command(), "demo"], env, rc_file))

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
