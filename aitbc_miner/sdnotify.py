"""systemd's notify protocol, so a ``Type=notify`` unit knows when the miner is ready,
whether it is alive, and when it is stopping.

``READY=1`` once registered; ``WATCHDOG=1`` only while the coordinator answered a
heartbeat within two heartbeat intervals (so a miner that is stuck, or cut off for long,
is restarted by systemd rather than reported alive); ``STOPPING=1`` when a termination
signal starts the drain; ``STATUS=`` says what it does. Without ``NOTIFY_SOCKET`` (not
under systemd) nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from .engine import Engine, Link, Snapshot

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


def healthy(snap: Snapshot, heartbeat_interval_s: float, now: float) -> bool:
    """Registered, and the last heartbeat answered within two intervals."""
    beat = snap.connection.last_heartbeat_at
    return (snap.connection.link is Link.REGISTERED and beat is not None
            and now - beat <= 2 * heartbeat_interval_s)


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
        if healthy(snap, heartbeat_interval_s, snap.at):
            notifier.send("WATCHDOG=1")
        now_status = f"{snap.mode.value}, {snap.running} running, outbox {snap.outbox}"
        if ready and now_status != status:
            notifier.send(f"STATUS={now_status}")
            status = now_status
        await asyncio.sleep(WATCHDOG_CHECK_S)
