"""The console over SSH, as processes: the miner outlives its terminal, and ``attach``
takes it back; an attached console rides out an agent killed and restarted, and says
when the agent is gone for good.

Real parts only: the devnet and the agents are subprocesses, the terminals are tmux
panes, the attached console in-process is a Pilot over ``RemoteEngine`` on the agent's
real control socket.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.host.remote import RemoteEngine
from tests.terminal import (
    MARK,
    Tmux,
    alive,
    miner_command,
    needs_tmux,
    processes_marked,
    shell_command,
)
from tests.terminal import tmux as tmux  # noqa: F401  (the fixture)
from tests.tui.conftest import screen_text, until
from tui.app import MinerConsole

from .conftest import DevnetProc, MinerLauncher, event_is

pytestmark = pytest.mark.timeout(150)
KEY = "not-the-devnets-key-7f3a"  # a miner key the devnet refuses


def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Re-check state that cannot be awaited (another process's) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what}")
        time.sleep(0.1)


def terminal_env(miner: MinerLauncher, devnet: DevnetProc, marker: str) -> dict[str, str]:
    """What a pane needs beyond the tmux server's environment: the miner's settings."""
    env = {k: v for k, v in miner.env(devnet).items()
           if k.startswith("AITBC_MINER_") or k in ("XDG_CONFIG_HOME", "PYTHONPATH")}
    return {**env, MARK: marker, "TERM": "xterm-256color", "COLORTERM": "truecolor"}


def the_miner(marker: str) -> int:
    found = [pid for pid in processes_marked(marker)
             if b"aitbc-miner" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(found) == 1, found
    return found[0]


def log_lines(miner: MinerLauncher) -> list[dict[str, Any]]:
    path = miner.state_dir / "aitbc-miner.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@needs_tmux
def test_the_miner_outlives_its_console_terminal_and_attach_takes_it_back(
        start_devnet: Callable[..., DevnetProc], miner: MinerLauncher, tmux: Tmux,
        tmp_path: Path) -> None:
    # Given a miner in its console in a terminal, running two jobs
    devnet = start_devnet("2026-01")
    marker = uuid.uuid4().hex
    env = terminal_env(miner, devnet, marker)
    tmux.start("console", shell_command([miner_command()], env, tmp_path / "console.rc"))
    tmux.wait_for(lambda t: "registered" in t, 30, "the console, registered", name="console")
    jobs = [devnet.submit({"type": "sleep", "seconds": 3}) for _ in range(2)]
    eventually(lambda: all(devnet.job(j)["state"] == "RUNNING" for j in jobs), 20,
               "both jobs claimed")
    pid = the_miner(marker)
    try:
        # When its terminal goes away (tmux killed: SIGHUP, the tty hung up)
        tmux("kill-session", "-t", "console")

        # Then the miner runs on: its jobs complete and are delivered, with receipts
        eventually(lambda: all(devnet.job(j)["state"] == "COMPLETED" for j in jobs), 30,
                   "both jobs completed at the coordinator")
        assert all(len(devnet.receipts(j)) == 1 for j in jobs)
        eventually(lambda: any(ln.get("event") == "console_detached"
                               for ln in log_lines(miner)), 10, "the detach logged")
        assert alive(pid), "the miner ended with its terminal"

        # and attach (read-only) shows them, and which kind of console it is
        tmux.start("attach", shell_command([miner_command(), "attach", "--read-only"], env,
                                           tmp_path / "attach.rc"))
        screen = tmux.wait_for(lambda t: "Receipts (2" in t and "ATTACHED" in t, 30,
                               "the delivered jobs' receipts, attached", name="attach")
        assert "READ-ONLY" in screen.splitlines()[0]
        tmux("send-keys", "-t", "attach", "q")
        eventually(lambda: (tmp_path / "attach.rc").exists(), 10, "attach quit")
        assert (tmp_path / "attach.rc").read_text().strip() == "0"
        assert alive(pid), "quitting a viewer stopped the miner"

        # and SIGTERM still drains and stops it, as headless
        os.kill(pid, signal.SIGTERM)
        eventually(lambda: not alive(pid), 30, "the miner stopped on SIGTERM")
    finally:
        for left in processes_marked(marker):
            os.kill(left, signal.SIGKILL)
    lines = log_lines(miner)
    assert any("termination signal" in str(ln.get("msg", "")) for ln in lines)
    assert not [ln for ln in lines if ln.get("level") == "ERROR" or "Traceback" in str(ln)]


def header(app: MinerConsole) -> str:
    return screen_text(app).splitlines()[0]


async def test_an_attached_console_rides_out_an_agent_restart(
        start_devnet: Callable[..., DevnetProc], miner: MinerLauncher, tmp_path: Path) -> None:
    # Given a headless agent, and a console attached to its control socket
    devnet = start_devnet("2026-01")
    agent = miner.start(devnet)
    agent.wait_for(event_is("registered"))
    remote = RemoteEngine(miner.state_dir / "control.sock", retry_s=0.1, give_up_after_s=60)
    await remote.connect()
    first = remote.snapshot().started_at
    app = MinerConsole(remote, prefs_path=tmp_path / "console.json")
    try:
        async with app.run_test(size=(120, 34)) as pilot:
            await until(pilot, lambda: "ATTACHED" in header(app), what="ATTACHED")
            # When the agent is killed (no goodbye; its socket file stays behind)
            agent.kill()
            # Then the console says it is disconnected, and retrying
            await until(pilot, lambda: "DISCONNECTED" in header(app), what="DISCONNECTED")
            assert "does not answer" in screen_text(app)
            # When the agent is started again on the same socket
            miner.start(devnet)
            # Then the console follows the new agent by itself: its own uptime, no banner
            await until(pilot, lambda: remote.snapshot().started_at != first
                        and "DISCONNECTED" not in header(app), timeout=30,
                        what="reconnected to the restarted agent")
            assert remote.reconnects == 1 and remote.gone is None
            assert app.is_running
    finally:
        await remote.close()


@needs_tmux
def test_attach_exits_1_saying_why_when_the_agent_is_gone_for_good(
        start_devnet: Callable[..., DevnetProc], miner: MinerLauncher, tmux: Tmux,
        tmp_path: Path) -> None:
    # Given a console attached to a headless agent
    devnet = start_devnet("2026-01")
    agent = miner.start(devnet)
    agent.wait_for(event_is("registered"))
    marker = uuid.uuid4().hex
    rc = tmp_path / "attach.rc"
    tmux.start("attach", shell_command([miner_command(), "attach", "--give-up-after", "2"],
                                       terminal_env(miner, devnet, marker), rc))
    tmux.wait_for(lambda t: "ATTACHED" in t, 30, "attached", name="attach")
    # When the agent stops for good (a clean stop removes its socket)
    agent.send(signal.SIGTERM)
    assert agent.wait_exit() == 0
    # Then the viewer shows it is disconnected, then exits 1 and says why, on the terminal
    eventually(rc.exists, 30, "attach exited")
    assert rc.read_text().strip() == "1"
    screen = tmux.screen("attach")
    assert "aitbc-miner attach: the miner has stopped: its control socket" in screen, screen


@needs_tmux
def test_a_refused_key_stops_the_console_and_says_why_on_the_terminal(
        start_devnet: Callable[..., DevnetProc], miner: MinerLauncher, tmux: Tmux,
        tmp_path: Path) -> None:
    # Given a coordinator that does not know the miner's key
    devnet = start_devnet("2026-01")
    env = {**terminal_env(miner, devnet, uuid.uuid4().hex), "AITBC_MINER_MINER__KEY": KEY}
    rc = tmp_path / "console.rc"
    # When the miner starts in its console
    tmux.start("console", shell_command([miner_command()], env, rc))
    # Then it exits 3, and once the console has given the terminal back, the reason is on it
    eventually(rc.exists, 30, "the console exited")
    assert rc.read_text().strip() == "3"
    screen = tmux.screen("console")
    assert "aitbc-miner: stopped: the coordinator refused the miner key" in screen, screen
    assert KEY not in screen
