"""A running miner seen through its control socket, shaped like the Engine for viewers.

``aitbc-miner attach`` hosts the console over this instead of an in-process engine, so a
headless agent under systemd can be watched and steered from any number of terminals
(read-only with ``--read-only``). Quitting an attached console leaves the agent running.

What travels is kept small (docs/attach.md): snapshots come without their receipt list,
and receipts are fetched a page at a time, the newest when the agent's receipt count
moves and older ones when the console scrolls to them. So a viewer costs the same
whether the agent holds 100 receipts or 10,000.

When the agent goes away, the viewer says so (``disconnected_since``) and tries again
every ``retry_s``; a restarted agent on the same socket is picked up by itself. It gives
up (``gone`` says why, and the event stream ends) once the socket file has been missing
for ``socket_gone_after_s``, or nothing has answered for ``give_up_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..engine.bus import EventBus, SnapshotListener, Subscription
from ..engine.codec import event_from_json, job_from_json, receipt_from_json, snapshot_from_json
from ..engine.snapshot import ReceiptView, Snapshot
from ..journal import JobRecord

log = logging.getLogger(__name__)

HEAD = 200  # the newest receipts a viewer keeps in its snapshots; older ones are paged in
SEEN_EVENTS = 1000  # events remembered, so a reconnect's replay is not shown twice


class AgentUnreachable(Exception):
    """No miner answers on the control socket (or it refuses this user)."""


class RemoteEngine:
    """Snapshots and events streamed from the agent; commands posted to it."""

    detached_quit = True  # quitting a viewer never drains or stops the agent
    attached = True  # the console shows ATTACHED (and READ-ONLY, DISCONNECTED) for it

    def __init__(self, socket_path: Path, *, read_only: bool = False, retry_s: float = 1.0,
                 give_up_after_s: float = 300.0, socket_gone_after_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.socket_path = socket_path
        self.read_only = read_only
        self.retry_s = retry_s
        self.give_up_after_s = give_up_after_s
        self.socket_gone_after_s = socket_gone_after_s
        self.clock = clock
        self.disconnected_since: float | None = None  # None while connected
        self.gone: str | None = None  # why it stopped trying: the agent is gone for good
        self.reconnects = 0
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)), base_url="http://miner",
            timeout=httpx.Timeout(10.0, read=None))
        self._bus = EventBus(recent=0)  # the agent replays its recent events itself
        self._snapshot: Snapshot | None = None
        self._seq = 0  # ours: a restarted agent counts from 0 again
        self._head: deque[ReceiptView] = deque(maxlen=HEAD)  # newest first
        self._receipts_counted = -1  # the agent's receipt count when the head was fetched
        self._seen: deque[tuple[float, str, str]] = deque(maxlen=SEEN_EVENTS)
        self._seen_set: set[tuple[float, str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    async def connect(self) -> None:
        """Read the agent's state once (``AgentUnreachable`` if it cannot), then follow it."""
        try:
            await self._load()
        except (httpx.TransportError, _Refused) as exc:
            raise AgentUnreachable(f"no miner answers on {self.socket_path}: {exc}") from exc
        self._task = asyncio.create_task(self._supervise(), name="attach")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        try:
            answer = await self._http.get(f"/receipts/{receipt_id}")
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == 200 else None

    async def job_record(self, job_id: str) -> JobRecord | None:
        """The job as the agent's journal keeps it (None: unknown, or no answer)."""
        try:
            answer = await self._http.get(f"/jobs/{job_id}")
        except httpx.TransportError:
            return None
        return job_from_json(answer.json()) if answer.status_code == 200 else None

    async def job_receipts(self, job_id: str) -> tuple[ReceiptView, ...]:
        """The receipts the agent stored for a job, oldest first (empty: none, or no answer)."""
        try:
            answer = await self._http.get(f"/jobs/{job_id}/receipts")
        except httpx.TransportError:
            return ()
        if answer.status_code != 200:
            return ()
        return tuple(receipt_from_json(r) for r in answer.json().get("items", ()))

    async def receipts_before(self, receipt_id: str, limit: int = HEAD) -> tuple[ReceiptView, ...]:
        """The page of receipts just older than ``receipt_id`` (empty: none, or unknown)."""
        try:
            page = await self._receipts(before=receipt_id, limit=limit)
        except (httpx.TransportError, _Refused):
            return ()
        return page[0] if page else ()

    # --- following the agent -------------------------------------------------------------

    async def _load(self) -> None:
        """One connection's start: the snapshot and the newest receipts."""
        answer = await self._http.get("/snapshot")
        if answer.status_code != 200:
            raise _Refused(_reason(answer))
        self._receipts_counted = -1
        await self._on_snapshot(answer.json())
        self.disconnected_since = None
        self._republish()

    async def _supervise(self) -> None:
        """Follow both streams; when either ends, say so and reconnect (or give up)."""
        while True:
            streams = [asyncio.create_task(self._follow("/snapshots", self._on_snapshot)),
                       asyncio.create_task(self._follow("/events", self._on_event))]
            try:
                await asyncio.wait(streams, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in streams:
                    task.cancel()
                await asyncio.gather(*streams, return_exceptions=True)
            self.disconnected_since = self.clock()
            log.warning("lost the miner on %s; retrying every %.1f s", self.socket_path,
                        self.retry_s)
            self._republish()
            if not await self._reconnect():
                log.error("%s", self.gone)
                self._republish()
                self._bus.close()  # the console's event log ends, and with it the console
                return
            self.reconnects += 1
            log.info("the miner answers on %s again", self.socket_path)

    async def _reconnect(self) -> bool:
        """Retry until the agent answers (True) or is gone for good (False, ``gone`` set)."""
        missing_since: float | None = None
        lost = self.disconnected_since or self.clock()
        while True:
            await asyncio.sleep(self.retry_s)
            now = self.clock()
            present = self.socket_path.exists()
            if present:
                missing_since = None
                try:
                    await self._load()
                    return True
                except (httpx.TransportError, _Refused):
                    pass
                except Exception:  # an answer we cannot read: say so, keep trying
                    log.exception("cannot read the miner's answer on %s", self.socket_path)
            elif missing_since is None:
                missing_since = now
            out_of_time = now - lost >= self.give_up_after_s
            if missing_since is not None and (
                    out_of_time or now - missing_since >= self.socket_gone_after_s):
                self.gone = f"the miner has stopped: its control socket {self.socket_path} is gone"
                return False
            if out_of_time:
                self.gone = (f"no miner has answered on {self.socket_path} for "
                             f"{now - lost:.0f} s; giving up")
                return False

    async def _follow(self, path: str, handle: Callable[[dict[str, Any]], Any]) -> None:
        try:
            async with self._http.stream("GET", path) as response:
                async for line in response.aiter_lines():
                    if line:
                        result = handle(json.loads(line))
                        if asyncio.iscoroutine(result):
                            await result
        except (httpx.TransportError, _Refused) as exc:
            log.warning("the miner's %s stream broke off: %s", path, exc)
        except Exception:  # an answer we cannot read: reconnect rather than freeze
            log.exception("cannot read the miner's %s stream", path)

    async def _on_snapshot(self, data: dict[str, Any]) -> None:
        snapshot = snapshot_from_json(data)
        if snapshot.counters.receipts != self._receipts_counted:
            await self._refresh_head()
            self._receipts_counted = snapshot.counters.receipts
        self._publish(snapshot)

    async def _refresh_head(self) -> None:
        """Fetch what arrived since the newest receipt we hold (all of the newest page when
        more than a page arrived, or the agent does not know that receipt)."""
        newest = self._head[0].receipt_id if self._head else None
        page = await self._receipts(after=newest, limit=HEAD) if newest else None
        if page is None or page[1]:
            page = await self._receipts(limit=HEAD)
            self._head.clear()
        if page is not None:
            self._head.extendleft(reversed(page[0]))

    async def _receipts(self, **params: Any) -> tuple[tuple[ReceiptView, ...], bool] | None:
        """(receipts newest first, whether more lie beyond), or None for an unknown id."""
        answer = await self._http.get(
            "/receipts", params={k: v for k, v in params.items() if v is not None})
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise _Refused(_reason(answer))
        body = answer.json()
        items = tuple(receipt_from_json(r) for r in body.get("items", ()))
        return items, bool(body.get("more"))

    def _publish(self, snapshot: Snapshot) -> None:
        self._seq += 1
        self._snapshot = dataclasses.replace(snapshot, seq=self._seq, receipts=tuple(self._head))
        self._bus.publish_snapshot(self._snapshot)

    def _republish(self) -> None:
        """The same state again, so that viewers redraw what they say about the link."""
        if self._snapshot is not None:
            self._publish(self._snapshot)

    def _on_event(self, data: dict[str, Any]) -> None:
        event = event_from_json(data)
        if event is None:
            return
        key = (event.at, event.name, event.message)
        if key in self._seen_set:
            return  # replayed by the agent after a reconnect: shown already
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(key)
        self._seen_set.add(key)
        self._bus.publish(event)

    # --- commands (posted; their effect shows in the next snapshot) -----------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> bool:
        if self.read_only or self.disconnected_since is not None:
            return False
        task = asyncio.get_running_loop().create_task(self._send(path, body or {}))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _send(self, path: str, body: dict[str, Any]) -> None:
        try:
            answer = await self._http.post(path, json=body)
        except httpx.TransportError as exc:
            log.warning("command %s did not reach the miner: %s", path, exc)
            return
        if answer.status_code >= 400:
            log.warning("the miner refused %s: %s", path, _reason(answer))

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


class _Refused(Exception):
    """The agent answered, but not with what was asked (403 for this user, say)."""


def _reason(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return f"HTTP {answer.status_code}"
    if isinstance(body, dict):
        return str(body.get("reason") or body.get("status") or f"HTTP {answer.status_code}")
    return f"HTTP {answer.status_code}"
