"""systemd's notify protocol, so a ``Type=notify`` unit knows when the miner is ready,
whether it is alive, what it is doing, and when it reloads or stops.

``READY=1`` as soon as the engine is up (journal open, recovery done, control socket
listening), not after registration: a coordinator outage must not fail the start.
``STATUS=`` then says what it does ("registering…", "registered, 2 slots",
"coordinator unreachable: …", "draining; …") each time that changes. ``WATCHDOG=1`` only
while the session loop does its job (heartbeats answered within two intervals, or retries
on schedule during an outage), so a stuck miner is restarted by systemd rather than
reported alive. The host sends ``STOPPING=1`` when a termination signal starts the drain
and ``RELOADING=1`` ... ``READY=1`` around a SIGHUP reload. Without ``NOTIFY_SOCKET`` (not
under systemd) nothing is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from ..engine import Engine, Link, Mode, Snapshot

WATCHDOG_CHECK_S = 1.0  # how often health is re-evaluated when nothing changes


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        if address and address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self.address = address or None
        self.status = ""  # the last STATUS= sent
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, *fields: str) -> None:
        if self._sock is None or self.address is None:
            return
        for field in fields:
            if field.startswith("STATUS="):
                self.status = field.removeprefix("STATUS=")
        with contextlib.suppress(OSError):  # systemd gone: nothing to tell
            self._sock.sendto("\n".join(fields).encode(), self.address)

    def reloading(self) -> None:
        """``RELOADING=1``, stamped as systemd wants it to pair the reload with its READY."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")

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


_LINK_TEXT = {
    Link.CONNECTING: "registering…",
    Link.BACKING_OFF: "coordinator unreachable",
    Link.AUTH_REFUSED: "the coordinator refused the miner key",
    Link.OFFLINE: "offline",
}


def status_line(snap: Snapshot) -> str:
    """What ``systemctl status`` shows: the mode when not plain running, the link to the
    coordinator, then the work in hand."""
    c = snap.connection
    if snap.mode is Mode.STARTING:
        return "starting"
    if c.link is Link.REGISTERED:
        link = f"registered, {c.concurrency} slot{'s' if c.concurrency != 1 else ''}"
    else:
        link = _LINK_TEXT[c.link] + (f": {c.reason}" if c.reason else "")
    parts = [] if snap.mode is Mode.RUNNING else [snap.mode.value]
    parts.append(link)
    if snap.running:
        parts.append(f"{snap.running} running")
    if snap.outbox:
        parts.append(f"outbox {snap.outbox}")
    return "; ".join(parts)


async def notify_systemd(engine: Engine, notifier: Notifier) -> None:
    """READY once the engine is up, STATUS on each change, WATCHDOG while healthy; until
    cancelled. Woken by every engine change, and at least every ``WATCHDOG_CHECK_S``."""
    if notifier.address is None:
        return
    ready = False
    fed_at = float("-inf")
    while True:
        snap = engine.snapshot()
        if not ready and snap.mode is not Mode.STARTING:
            notifier.send("READY=1", f"STATUS={status_line(snap)}")
            ready = True
        if ready:
            line = status_line(snap)
            if line != notifier.status:
                notifier.send(f"STATUS={line}")
            now = time.monotonic()
            interval = engine.core.tuning.heartbeat_interval_s  # a reload may change it
            if now - fed_at >= WATCHDOG_CHECK_S and alive(snap, interval, snap.at):
                notifier.send("WATCHDOG=1")
                fed_at = now
        def moved(s: Snapshot, seen: int = snap.seq) -> bool:
            return s.seq != seen

        with contextlib.suppress(TimeoutError):
            await engine.wait_until(moved, timeout=WATCHDOG_CHECK_S)
