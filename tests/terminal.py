"""A real terminal for tests: programs run in a detached tmux of a known size, on a tmux
server of the test's own (``-L``), read back with ``capture-pane``.

Nothing here sleeps to synchronise: ``wait_for`` re-reads the screen until a predicate
holds or its deadline passes (a screen cannot be awaited).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None,
                                reason="tmux is not installed (apt-get install tmux)")
MARK = "AITBC_TUI_TEST_MARK"  # set in what a test starts, to find (and end) it afterwards


def miner_command() -> str:
    """The installed console script: beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "aitbc-miner"
    found = str(beside) if beside.exists() else shutil.which("aitbc-miner")
    if found is None:
        pytest.fail("aitbc-miner is not installed: pip install -e . (or pip install .)")
    return found


def shell_command(argv: list[str], env: Mapping[str, str], rc_file: Path) -> str:
    """``env K=V ... argv; echo $? > rc_file; sleep 600``: the pane outlives the program,
    so its last screen can be read, and its exit code lands in ``rc_file``."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (f"env {assigns} {shlex.join(argv)}; echo $? > {shlex.quote(str(rc_file))}; "
            "sleep 600")


class Tmux:
    def __init__(self) -> None:
        self.socket = f"aitbc-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def start(self, name: str, command: str, size: tuple[int, int] = (120, 34)) -> None:
        self("new-session", "-d", "-s", name, "-x", str(size[0]), "-y", str(size[1]), command)

    def screen(self, name: str = "demo") -> str:
        return self("capture-pane", "-p", "-t", name)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str,
                 name: str = "demo") -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen(name)
            if predicate(text):
                return text
            time.sleep(0.25)
        raise AssertionError(f"not on screen within {timeout}s: {what}\n{text}")

    def kill(self) -> None:
        subprocess.run([str(TMUX), "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    yield session
    session.kill()


def processes_marked(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARK=marker`` (what a test started)."""
    found = []
    needle = f"{MARK}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
