"""The control sockets of a real headless agent: floods, descriptor limits, ``ctl``.

The agent runs as a subprocess; clients are raw sockets in this process or ``aitbc-miner
ctl`` subprocesses. Nothing sleeps to synchronise: each wait is on a log line, a socket
answer, or (after a flood, where nothing can be awaited) bounded polling.
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aitbc_miner.host.runtime import raise_open_files_limit
from tests.fakes.raw_http import request

from .conftest import MINER_EXE, WAIT_S, DevnetProc, MinerLauncher, event_is, message_has

pytestmark = pytest.mark.timeout(120)

FLOOD = 1400
# Starts the agent under the given RLIMIT_NOFILE (soft, hard), as a systemd unit or a
# shell with a low default would; exec keeps the pid.
UNDER_LIMIT = ("import os, resource, sys; "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
               "os.execv(sys.argv[3], sys.argv[3:])")


def sockets(miner: MinerLauncher) -> tuple[Path, Path]:
    return miner.state_dir / "control.sock", miner.state_dir / "control.ro.sock"


def answer_once_free(path: Path, route: str = "/snapshot") -> tuple[int, dict[str, object]]:
    """``request`` once the server has let go of a flood (bounded polling)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            status, body = request(path, "GET", route)
            if status == 200:
                return status, body
        except (ConnectionError, BlockingIOError, IndexError, ValueError):
            pass  # refused while it was still full
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never answered {route} after the flood")
        time.sleep(0.1)  # bounded polling: the server's closing of the flood is not observable


@contextlib.contextmanager
def flood(path: Path, count: int, *, wait_for_room: bool) -> Iterator[list[socket.socket]]:
    """``count`` connections asking for /events, held open. With ``wait_for_room`` each
    connect waits while the listener's backlog is full; else such a one is left out (EAGAIN:
    a server that stopped accepting would otherwise block the test)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(wait_for_room)  # blocking: waits for room (pytest-timeout bounds it)
            code = s.connect_ex(str(path))
            if code != 0:
                assert code == errno.EAGAIN and not wait_for_room, errno.errorcode.get(code)
                s.close()
                continue
            with contextlib.suppress(OSError):  # refused ones may be closed already
                s.send(b"GET /events HTTP/1.1\r\nHost: miner\r\n\r\n")
            held.append(s)
        yield held
    finally:
        for s in held:
            s.close()


def first_line(s: socket.socket) -> bytes:
    """The status line the server sent on ``s`` (b"" when it closed or reset it)."""
    s.setblocking(True)
    s.settimeout(WAIT_S)
    try:
        return s.recv(64).split(b"\r\n", 1)[0]
    except ConnectionResetError:
        return b""


@pytest.fixture
def many_descriptors() -> None:
    if raise_open_files_limit() < FLOOD + 200:
        pytest.skip(f"this test process may not open {FLOOD} sockets (RLIMIT_NOFILE hard)")


def test_a_flood_of_event_streams_is_capped_and_the_agent_keeps_answering(
        start_devnet, miner: MinerLauncher, many_descriptors: None) -> None:
    # Given a running agent with the default cap of 64 connections per socket
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet)
    proc.wait_for(event_is("registered"))
    command, ro = sockets(miner)
    mark = proc.mark()
    # When 1,400 clients open /events streams on the read-only socket and hold them
    with flood(ro, FLOOD, wait_for_room=True) as held:
        assert len(held) == FLOOD
        lines = [first_line(s) for s in held]
        # Then 64 stream and every other one is answered 503 (or closed) at once
        streaming = sum(line == b"HTTP/1.1 200 OK" for line in lines)
        assert streaming == 64, lines[:3]
        assert len(held) - streaming == sum(b"503" in line or line == b"" for line in lines)
        proc.wait_for(message_has("is full"), after=mark)
        # ... and while the flood holds, an operator on the command socket is answered
        status, snapshot = request(command, "GET", "/snapshot")
        assert status == 200 and snapshot["miner_id"] == "rig-it"
        assert request(command, "POST", "/pause")[0] == 200
    # Then the agent lives, and once the flood is gone the read-only socket answers again
    assert answer_once_free(ro)[1]["mode"] == "paused"
    assert proc.popen.poll() is None, proc.tail()


def test_running_out_of_descriptors_never_kills_the_agent(
        start_devnet, miner: MinerLauncher, many_descriptors: None) -> None:
    # Given an agent held to 128 descriptors (hard limit) with a cap far above that
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet, argv=[sys.executable, "-c", UNDER_LIMIT, "128", "128",
                                     str(MINER_EXE), "--headless"],
                       CONTROL__MAX_CONNECTIONS="4096")
    proc.wait_for(event_is("registered"))
    command, _ = sockets(miner)
    mark = proc.mark()
    # When 1,400 clients flood its command socket, so that accept() fails with EMFILE
    with flood(command, FLOOD, wait_for_room=False):
        proc.wait_for(message_has("out of system resource"), after=mark)
    # Then it survives, and answers a legitimate client once the flood has gone
    status, snapshot = answer_once_free(command)
    assert status == 200 and snapshot["mode"] == "running"
    assert proc.popen.poll() is None, proc.tail()


def _open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = (resource.RLIM_INFINITY if v == "unlimited" else int(v)
                          for v in line.split()[3:5])
            return soft, hard
    raise AssertionError("no open files line in /proc/PID/limits")


def test_the_agent_raises_its_soft_open_files_limit_to_the_hard_one(
        start_devnet, miner: MinerLauncher) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) leaves no room above a soft 256")
    # Given an agent started with a soft limit of 256 under a higher hard one
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet, argv=[sys.executable, "-c", UNDER_LIMIT, "256", str(hard),
                                     str(MINER_EXE), "--headless"])
    # When it is up (its control socket answers)
    proc.wait_for(event_is("registered"))
    assert request(sockets(miner)[0], "GET", "/snapshot")[0] == 200
    # Then its soft limit is the hard one
    soft_now, hard_now = _open_files(proc.pid)
    assert hard_now == hard
    assert soft_now == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


def run_ctl(miner: MinerLauncher, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MINER_EXE), "ctl", *args], env=miner.env(None), cwd=miner.root,
                          capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL)


def test_ctl_reaches_the_read_only_socket_and_its_commands_are_refused_there(
        start_devnet, miner: MinerLauncher) -> None:
    # Given a running agent
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet)
    proc.wait_for(event_is("registered"))
    command, ro = sockets(miner)
    # When the operator uses ctl read-only (by flag, and by naming the socket), then not
    watched = run_ctl(miner, "status", "--read-only", "--json")
    refused = run_ctl(miner, "pause", "--read-only")
    named = run_ctl(miner, "drain", "--socket", str(ro), "--json")
    still = json.loads(run_ctl(miner, "status", "--socket", str(command), "--json").stdout)
    paused = run_ctl(miner, "pause")
    # Then reads work there and commands are refused (exit 1), changing nothing
    assert watched.returncode == 0 and json.loads(watched.stdout)["mode"] == "running"
    assert refused.returncode == 1 and "forbidden" in refused.stdout, refused
    assert named.returncode == 1 and json.loads(named.stdout)["status"] == "forbidden"
    assert still["mode"] == "running"
    # ... while the command socket takes them
    assert paused.returncode == 0 and "paused" in paused.stdout, paused
