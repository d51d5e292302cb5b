"""systemd's notify protocol, so a ``Type=notify`` unit knows when the miner is ready,
whether it is alive, and when it is stopping.

``READY=1`` once registered; ``WATCHDOG=1`` only while the session loop does its job
(heartbeats answered within two intervals, or retries on schedule during an outage), so
a stuck miner is restarted by systemd rather than reported alive; ``STOPPING=1`` when a
termination signal starts the drain; ``STATUS=`` says what it does. Without ``NOTIFY_SOCKET`` (not
under systemd) nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from ..engine import Engine, Link, Snapshot

WATCHDOG_CHECK_S = 1.0  # how often readiness is re-evaluated


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        if address and address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self.address = address or None
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, *fields: str) -> None:
        if self._sock is None or self.address is None:
            return
        with contextlib.suppress(OSError):  # systemd gone: nothing to tell
            self._sock.sendto("\n".join(fields).encode(), self.address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def alive(snap: Snapshot, heartbeat_interval_s: float, now: float) -> bool:
    """Whether the session loop is doing its job: the coordinator answered a heartbeat
    within two intervals, or, during an outage, the loop is retrying on schedule.

    An outage alone must not get the miner restarted: that would interrupt running jobs
    whose outcomes the outbox could still deliver once the coordinator is back. A loop
    that stopped making attempts is what the watchdog is for.
    """
    c = snap.connection
    window = 2 * heartbeat_interval_s
    if c.link is Link.REGISTERED:
        return c.last_heartbeat_at is not None and now - c.last_heartbeat_at <= window
    if c.link is Link.BACKING_OFF:
        return c.backoff_until is not None and now - c.backoff_until <= window
    return False


async def notify_systemd(engine: Engine, notifier: Notifier, heartbeat_interval_s: float) -> None:
    """READY once registered, WATCHDOG while healthy, STATUS on change; until cancelled.
    (``STOPPING=1`` is sent by the host when a termination signal starts the drain.)"""
    if notifier.address is None:
        return
    ready = False
    status = ""
    while True:
        snap = engine.snapshot()
        if not ready and snap.connection.link is Link.REGISTERED:
            notifier.send("READY=1", f"STATUS=registered as {snap.miner_id}")
            ready = True
        if alive(snap, heartbeat_interval_s, snap.at):
            notifier.send("WATCHDOG=1")
        now_status = f"{snap.mode.value}, {snap.running} running, outbox {snap.outbox}"
        if ready and now_status != status:
            notifier.send(f"STATUS={now_status}")
            status = now_status
        await asyncio.sleep(WATCHDOG_CHECK_S)
