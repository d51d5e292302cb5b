"""The headless miner as systemd runs it: what it tells a notify socket (a real datagram
socket standing in for systemd's), reload on SIGHUP, and one miner per state dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from .conftest import MINER_EXE, WAIT_S, MinerLauncher, Proc, event_is

pytestmark = pytest.mark.timeout(120)



class NotifySocket:
    """systemd's end of the notify protocol: a datagram socket that keeps what it hears."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="notify-")  # short: a socket path has 108 bytes
        self.path = os.path.join(self._dir, "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self.heard: list[tuple[float, str]] = []  # (monotonic time, datagram)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            with self._cond:
                self.heard.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.heard)

    def wait_for(self, predicate: Callable[[str], bool], *, after: int = 0,
                 timeout: float = WAIT_S) -> tuple[int, float, str]:
        """The first datagram from index ``after`` on that matches: (index, time, text)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.heard)):
                    at, text = self.heard[i]
                    if predicate(text):
                        return i, at, text
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such datagram within {timeout}s; heard: "
                                         f"{[t for _, t in self.heard[after:]]}")
                self._cond.wait(left)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.rmdir(self._dir)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def has(field: str) -> Callable[[str], bool]:
    return lambda text: field in text.split("\n")


def status(predicate: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: any(line.startswith("STATUS=") and predicate(line[7:])
                            for line in text.split("\n"))


def test_systemd_hears_ready_status_watchdog_reload_and_stopping(
        start_devnet, miner: MinerLauncher, procs: list[Proc], notify: NotifySocket) -> None:
    # Given a coordinator that is down (its port known: it comes back on it later), and a
    # miner config file with keys the environment leaves to it
    devnet = start_devnet("2026-08")
    devnet.kill()
    config = miner.root / "miner.yaml"
    config.write_text("slots:\n  cpu: 2\npoll:\n  max_interval_s: 0.3\n")
    env = miner.env(devnet, SLOTS__CPU=None, POLL__MAX_INTERVAL_S=None)
    env["NOTIFY_SOCKET"] = notify.path

    # When the miner starts under that notify socket
    proc = Proc([str(MINER_EXE), "--headless", "--config", str(config)], env=env,
                cwd=miner.root, name="miner")
    procs.append(proc)

    # Then it is READY though it cannot register (READY never waits on the coordinator:
    # it could not come before the coordinator is started again below)
    _, _, text = notify.wait_for(has("READY=1"))
    assert "registered" not in text
    # its status says why it is not registered, and a retrying miner is alive
    notify.wait_for(status(lambda s: s.startswith("coordinator unreachable: ")))
    notify.wait_for(has("WATCHDOG=1"))
    # and says so once the coordinator is back
    devnet.start()
    notify.wait_for(status(lambda s: s == "registered, 2 slots"))

    # When the config changes (two live keys, one that needs a restart) and SIGHUP comes
    config.write_text("slots:\n  cpu: 3\npoll:\n  max_interval_s: 0.5\ngpu:\n  history: 60\n")
    mark, logs = notify.mark(), proc.mark()
    proc.send(signal.SIGHUP)
    # Then systemd hears RELOADING, then READY, and the miner says what it applied
    reloading, _, _ = notify.wait_for(has("RELOADING=1"), after=mark)
    assert "MONOTONIC_USEC=" in notify.heard[reloading][1]
    notify.wait_for(has("READY=1"), after=reloading + 1)
    (line,) = proc.wait_for(event_is("config_reloaded"), after=logs)
    assert line["applied"] == ["poll.max_interval_s", "slots.cpu"], line
    assert line["need_restart"] == ["gpu.history"], line
    # and it registers again with the slot it gained
    notify.wait_for(status(lambda s: s == "registered, 3 slots"), after=mark)

    # When the config breaks and SIGHUP comes again
    config.write_text("slots:\n  cpu: -1\n")
    mark, logs = notify.mark(), proc.mark()
    proc.send(signal.SIGHUP)
    # Then nothing changes, the miner says why, and it goes on
    reloading, _, _ = notify.wait_for(has("RELOADING=1"), after=mark)
    notify.wait_for(has("READY=1"), after=reloading + 1)
    (line,) = proc.wait_for(event_is("config_not_reloaded"), after=logs)
    assert "slots.cpu" in line["msg"] and line["level"] == "ERROR"
    assert proc.popen.poll() is None

    # When an operator drains it, the status says so
    subprocess.run([str(MINER_EXE), "ctl", "drain"], env=env, check=True, timeout=WAIT_S,
                   capture_output=True)
    notify.wait_for(status(lambda s: s.startswith("drained; registered, 3 slots")))
    # and on SIGTERM systemd hears STOPPING and the miner exits 0
    mark = notify.mark()
    proc.send(signal.SIGTERM)
    notify.wait_for(has("STOPPING=1"), after=mark)
    assert proc.wait_exit() == 0, proc.tail()
    assert "Traceback" not in proc.text()


def test_a_second_miner_on_the_same_state_dir_exits_2_and_leaves_the_first_alone(
        start_devnet, miner: MinerLauncher) -> None:
    # Given a miner at work, its control socket in its state dir
    devnet = start_devnet("2026-01")
    first = miner.start(devnet)
    first.wait_for(event_is("registered"))
    sock = miner.state_dir / "control.sock"
    inode = sock.stat().st_ino

    # When a second one starts on the same state dir
    second = miner.start(devnet)
    code = second.wait_exit(timeout=WAIT_S)

    # Then it exits 2, with one line naming the miner that holds the dir
    assert code == 2, second.tail()
    said = [line for line in second.stderr if line.strip()]
    assert len(said) == 1 and f"pid {first.pid}" in said[0], said
    assert str(miner.state_dir) in said[0] and not second.stdout
    # and the first goes on: same socket, answering, taking work
    assert sock.is_socket() and sock.stat().st_ino == inode
    shown = subprocess.run([str(MINER_EXE), "status"], env=miner.env(devnet),
                           capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert shown.returncode == 0 and shown.stdout.startswith("rig-it @ "), shown.stderr
    job_id = devnet.submit({"type": "noop"})
    first.wait_for(event_is("outcome_delivered", job_id=job_id))
    assert first.popen.poll() is None
