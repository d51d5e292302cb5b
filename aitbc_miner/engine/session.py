"""The miner's session with the coordinator: register, then heartbeat, forever.

Registration sends the capability keys the coordinator matches on and ``concurrency``
= slots that can take work (never 0: the coordinator reads 0 as "unlimited"). Every
heartbeat carries the true number of jobs we hold, which also repairs the coordinator's
``inflight`` counter (2026-08 does not decrement it on ``/fail``). Register resets that
counter to 0, so a heartbeat follows every registration at once.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import time
from typing import Any

import psutil

from ..backoff import Backoff, jittered
from ..coordinator import (
    AuthRefused,
    CoordinatorError,
    NotRegistered,
    ProtocolViolation,
    RateLimited,
    Rejected,
    Unavailable,
)
from ..gpu import capabilities as gpu_capabilities
from ..protocol import HeartbeatRequest, RegisterRequest
from .core import Core
from .snapshot import AuthRefusedEvent, BackingOff, Link, ProtocolProblem, Registered

MIN_HEARTBEAT_GAP_S = 1.0  # woken heartbeats (after a /fail) at most once a second


class Session:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.backoff = Backoff(rng=core.rng)
        self._last_problem: str | None = None
        self._last_beat = 0.0

    def capabilities(self) -> dict[str, Any]:
        t = self.core.tuning
        caps: dict[str, Any] = {
            "gpus": [],
            "cpu": {"cores": os.cpu_count() or 1, "arch": platform.machine()},
            "memory_mb": psutil.virtual_memory().total // (1 << 20),
            "disk_free_mb": shutil.disk_usage(self.core.workspace_root).free // (1 << 20),
            "slots": {
                kind: sum(1 for s in self.core.pool.slots if s.kind.value == kind and not s.lost)
                for kind in ("cpu", "gpu")
            },
        }
        if self.core.telemetry is not None:  # gpus [{name, memory_mb}], cuda, simulated
            caps.update(gpu_capabilities(self.core.telemetry.snapshot))
        if t.price is not None:
            caps["price"] = t.price
        if t.region is not None:
            caps["region"] = t.region
        caps.update(self.core.registry.capabilities())
        return caps

    async def run(self) -> None:
        core = self.core
        while True:
            if core.link is Link.AUTH_REFUSED:
                core.set_loop("session", "stopped: the coordinator refused the miner key")
                await core.wake_session.wait()
                core.wake_session.clear()
                continue
            registered_now = False
            try:
                if core.need_register or core.registered_concurrency != self._concurrency():
                    await self._register()
                    registered_now = True
                await self._heartbeat()
                self.backoff.reset()
                self._last_problem = None
                delay = jittered(core.tuning.heartbeat_interval_s, core.rng)
                core.set_loop("session", f"heartbeat every {core.tuning.heartbeat_interval_s:g}s")
            except AuthRefused as exc:
                core.set_link(Link.AUTH_REFUSED, f"{exc.endpoint} answered {exc.message}")
                core.emit(AuthRefusedEvent(
                    at=core.clock(), endpoint=exc.endpoint, status=exc.status,
                    message=f"the coordinator refused the miner key ({exc.message}); "
                    "not retrying until the operator fixes it"))
                continue
            except NotRegistered as exc:
                core.need_register = True
                if not registered_now:
                    continue  # the coordinator forgot us (a restart): register again at once
                # Forgotten again right after registering: back off instead of spinning.
                delay = self.backoff.next_delay()
                self._report(exc, delay)
            # Any other refusal (422, 400, an unexpected 404) is no reason to stop the
            # miner: it is shown, and retried with backoff, like an outage.
            except (Unavailable, ProtocolViolation, Rejected) as exc:
                delay = self.backoff.next_delay(
                    exc.retry_after if isinstance(exc, RateLimited) else None)
                self._report(exc, delay)
            if await core.sleep(delay, core.wake_session):
                core.wake_session.clear()
                since = time.monotonic() - self._last_beat
                if since < MIN_HEARTBEAT_GAP_S:
                    await asyncio.sleep(MIN_HEARTBEAT_GAP_S - since)

    def _concurrency(self) -> int:
        return max(1, self.core.pool.usable())

    async def _register(self) -> None:
        core = self.core
        core.set_loop("session", "registering")
        concurrency = self._concurrency()
        capabilities = await asyncio.to_thread(self.capabilities)  # psutil, disk: off the loop
        await core.client.register(RegisterRequest(
            capabilities=capabilities, concurrency=concurrency, region=core.tuning.region))
        core.need_register = False
        core.registered_concurrency = concurrency
        core.set_link(Link.REGISTERED)
        core.emit(Registered(at=core.clock(), concurrency=concurrency,
                             message=f"registered with concurrency {concurrency}"))
        core.wake_poll.set()
        if core.lookup_supported is None:
            await self._probe_lookup()

    async def _probe_lookup(self) -> None:
        """Can we ask the coordinator which of our jobs it has (2026-08 earnings call)?"""
        try:
            self.core.lookup_supported = await self.core.client.earnings() is not None
        except CoordinatorError:
            self.core.lookup_supported = None  # ask again after the next registration
        self.core.changed()

    async def _heartbeat(self, status: str = "ONLINE") -> None:
        core = self.core
        self._last_beat = time.monotonic()
        await core.client.heartbeat(HeartbeatRequest(
            inflight=len(core.held), status=status,
            metadata={"mode": core.mode.value, "outbox": core.outbox_size,
                      "slots": core.pool.usable(), "agent": "aitbc-miner"}))
        core.last_heartbeat_at = core.clock()
        if core.link is not Link.REGISTERED:
            core.set_link(Link.REGISTERED)
        core.changed()

    async def goodbye(self) -> None:
        """Tell the coordinator we are gone, so it hands our share to other miners."""
        try:
            await self.core.client.heartbeat(HeartbeatRequest(
                inflight=len(self.core.held), status="OFFLINE", metadata={"reason": "shutdown"}))
        except CoordinatorError as exc:
            self.core.set_loop("session", "offline", f"goodbye heartbeat failed: {exc}")
            return
        self.core.set_link(Link.OFFLINE, "miner stopped")

    def _report(self, exc: CoordinatorError, delay: float) -> None:
        core = self.core
        reason = str(exc)
        core.set_link(Link.BACKING_OFF, reason, core.clock() + delay)
        core.set_loop("session", f"backing off {delay:.1f}s after {reason}", reason)
        kind = f"{exc.endpoint} {type(exc).__name__} {exc.status}"  # not the text, which varies
        if kind == self._last_problem:
            return  # logged once per streak
        self._last_problem = kind
        if isinstance(exc, ProtocolViolation):
            core.emit(ProtocolProblem(at=core.clock(), endpoint=exc.endpoint, status=exc.status,
                                      message=f"malformed answer from {reason}"))
        core.emit(BackingOff(at=core.clock(), loop="session", delay_s=round(delay, 3),
                             attempt=self.backoff.attempt, reason=reason,
                             message=f"{reason}; retrying in {delay:.1f}s"))
