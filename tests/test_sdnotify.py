"""systemd notify: READY once the engine is up, STATUS as the state changes, WATCHDOG only
while healthy, STOPPING on TERM. (The real process, a coordinator outage and reloads:
tests/integration/test_service.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Link, Mode
from aitbc_miner.host.runtime import Host
from aitbc_miner.host.sdnotify import alive, status_line


async def _datagrams(sock: socket.socket, until: str, timeout: float = 15.0) -> list[str]:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not any(until in m for m in seen):
            data = await loop.sock_recv(sock, 4096)
            seen.append(data.decode())
    return seen


async def test_systemd_hears_ready_watchdog_and_stopping(devnet: Devnet, make_engine,
                                                         tmp_path: Path, monkeypatch) -> None:
    # Given a notify socket like systemd's, and a miner hosted as the CLI hosts it
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    engine = make_engine(devnet.url)
    host = Host(engine, drain_grace_s=5.0)
    run = asyncio.create_task(host.run(signals=False))
    try:
        # When it registers and heartbeats
        first = await _datagrams(sock, "WATCHDOG=1")
        # ... and is told to terminate
        host.on_terminate()
        rest = await _datagrams(sock, "STOPPING=1")
        async with asyncio.timeout(15):
            assert await run == 0
    finally:
        sock.close()
    # Then READY came first, the watchdog was fed, and systemd knew it was stopping
    assert first[0].startswith("READY=1")
    assert any(m == "WATCHDOG=1" for m in first)
    assert any(m.startswith("STOPPING=1") for m in rest)


def test_the_watchdog_is_fed_while_heartbeats_answer_or_retries_keep_their_schedule(
        devnet: Devnet, make_engine) -> None:
    snap = make_engine(devnet.url).snapshot()

    def at(link: Link, **fields: float) -> object:
        return dataclasses.replace(snap, connection=dataclasses.replace(
            snap.connection, link=link, **fields))

    registered = at(Link.REGISTERED, last_heartbeat_at=100.0)
    assert alive(registered, heartbeat_interval_s=15, now=129.0)
    assert not alive(registered, heartbeat_interval_s=15, now=131.0)  # heartbeats stalled
    # An outage with retries on schedule is alive (restarting would interrupt jobs) ...
    assert alive(at(Link.BACKING_OFF, backoff_until=140.0), heartbeat_interval_s=15, now=139.0)
    # ... a retry loop that stopped retrying is not
    assert not alive(at(Link.BACKING_OFF, backoff_until=100.0), heartbeat_interval_s=15,
                     now=131.0)
    assert not alive(at(Link.CONNECTING), heartbeat_interval_s=15, now=100.0)


def test_the_status_line_says_the_mode_the_link_and_the_work_in_hand(
        devnet: Devnet, make_engine) -> None:
    snap = make_engine(devnet.url).snapshot()

    def line(mode: Mode, link: Link, reason: str | None = None, concurrency: int = 2,
             outbox: int = 0) -> str:
        return status_line(dataclasses.replace(
            snap, mode=mode, outbox=outbox, connection=dataclasses.replace(
                snap.connection, link=link, reason=reason, concurrency=concurrency)))

    assert line(Mode.STARTING, Link.CONNECTING) == "starting"
    assert line(Mode.RUNNING, Link.CONNECTING) == "registering…"
    assert line(Mode.RUNNING, Link.REGISTERED) == "registered, 2 slots"
    assert line(Mode.RUNNING, Link.REGISTERED, concurrency=1) == "registered, 1 slot"
    assert line(Mode.RUNNING, Link.BACKING_OFF, "register: ConnectError") == (
        "coordinator unreachable: register: ConnectError")
    assert line(Mode.DRAINING, Link.REGISTERED, outbox=3) == (
        "draining; registered, 2 slots; outbox 3")
    assert line(Mode.PAUSED, Link.AUTH_REFUSED, "401") == (
        "paused; the coordinator refused the miner key: 401")
