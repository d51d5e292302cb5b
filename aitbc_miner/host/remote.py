"""A running miner seen through its control socket, shaped like the Engine for viewers.

``aitbc-miner attach`` hosts the console over this instead of an in-process engine, so a
headless agent under systemd can be watched and steered from any number of terminals
(read-only with ``--read-only``). Quitting an attached console leaves the agent running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..engine.bus import EventBus, SnapshotListener, Subscription
from ..engine.codec import event_from_json, snapshot_from_json
from ..engine.snapshot import Mode, Snapshot

log = logging.getLogger(__name__)


class AgentUnreachable(Exception):
    """No miner answers on the control socket."""


class RemoteEngine:
    """Snapshots and events streamed from the agent; commands posted to it."""

    detached_quit = True  # quitting a viewer never drains or stops the agent

    def __init__(self, socket_path: Path, *, read_only: bool = False) -> None:
        self.socket_path = socket_path
        self.read_only = read_only
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)), base_url="http://miner",
            timeout=httpx.Timeout(10.0, read=None))
        self._bus = EventBus(recent=0)  # the agent replays its recent events itself
        self._snapshot: Snapshot | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[Any]] = set()

    async def connect(self) -> None:
        try:
            answer = await self._http.get("/snapshot")
        except httpx.TransportError as exc:
            raise AgentUnreachable(f"no miner answers on {self.socket_path}: {exc}") from exc
        self._snapshot = snapshot_from_json(answer.json())
        self._tasks = [asyncio.create_task(self._follow("/snapshots", self._on_snapshot)),
                       asyncio.create_task(self._follow("/events", self._on_event))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        self._bus.close()
        await self._http.aclose()

    # --- reading -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("connect() first")
        return self._snapshot

    def add_listener(self, listener: SnapshotListener) -> Callable[[], None]:
        return self._bus.add_listener(listener)

    def subscribe(self, maxlen: int = 1000) -> Subscription:
        return self._bus.subscribe(maxlen)

    async def receipt_body(self, receipt_id: str) -> dict[str, Any] | None:
        answer = await self._http.get(f"/receipts/{receipt_id}")
        return answer.json() if answer.status_code == 200 else None

    async def _follow(self, path: str, handle: Callable[[dict[str, Any]], None]) -> None:
        try:
            async with self._http.stream("GET", path) as response:
                async for line in response.aiter_lines():
                    if line:
                        handle(json.loads(line))
        except httpx.TransportError as exc:
            log.warning("lost the miner's %s stream: %s", path, exc)
        if path == "/snapshots" and self._snapshot is not None:  # the agent is gone
            self._on_snapshot_obj(dataclasses.replace(self._snapshot, mode=Mode.STOPPED))

    def _on_snapshot(self, data: dict[str, Any]) -> None:
        self._on_snapshot_obj(snapshot_from_json(data))

    def _on_snapshot_obj(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._bus.publish_snapshot(snapshot)

    def _on_event(self, data: dict[str, Any]) -> None:
        event = event_from_json(data)
        if event is not None:
            self._bus.publish(event)

    # --- commands (posted; their effect shows in the next snapshot) -----------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> bool:
        if self.read_only:
            return False
        task = asyncio.get_running_loop().create_task(self._http.post(path, json=body or {}))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    def pause(self) -> None:
        self._post("/pause")

    def resume(self) -> None:
        self._post("/resume")

    def drain(self, *, exit_when_drained: bool = False, grace_s: float | None = None) -> None:
        self._post("/drain", {"exit_when_drained": exit_when_drained})

    def undrain(self) -> None:
        self._post("/undrain")

    def cancel(self, job_id: str, reason: str = "operator") -> bool:
        if self._snapshot is None or self._snapshot.job(job_id) is None:
            return False
        return self._post(f"/cancel/{job_id}")

    def cancel_all(self, reason: str = "operator") -> int:
        jobs = self._snapshot.jobs if self._snapshot else ()
        return sum(self.cancel(job.job_id, reason) for job in jobs)

    def stop(self, *, cancel_running: bool = False) -> None:
        """A viewer does not stop the agent; it only stops following it."""
