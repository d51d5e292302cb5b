"""The control socket: a running miner's snapshot, events and commands on a Unix socket.

It exposes exactly the engine's public surface, nothing more, so ``aitbc-miner ctl`` (and
later a console attached to a headless agent) acts through the same commands as the
keys and the signals. The socket is owner-only: its folder is 0700 and the socket 0600,
since whoever can write to it can cancel jobs.

Routes (HTTP over the Unix socket, JSON bodies)::

    GET  /snapshot              the current Snapshot
    GET  /snapshots             NDJSON stream: the current Snapshot, then each published one
    GET  /events                NDJSON stream of events (the recent ones first)
    GET  /receipts/{id}         a stored receipt as the coordinator signed it
    POST /pause | /resume | /undrain
    POST /drain                 {"exit_when_drained": bool}
    POST /cancel/{job_id}       404 when the miner does not hold the job
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from .engine import Engine, Snapshot
from .engine.codec import to_jsonable

SOCKET_NAME = "control.sock"


class ControlServer:
    def __init__(self, engine: Engine, socket_path: Path) -> None:
        self.engine = engine
        self.path = socket_path
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/snapshot", self._snapshot)
        app.router.add_get("/snapshots", self._snapshots)
        app.router.add_get("/events", self._events)
        app.router.add_get("/receipts/{receipt_id}", self._receipt)
        app.router.add_post("/pause", self._command(lambda e, _b: e.pause()))
        app.router.add_post("/resume", self._command(lambda e, _b: e.resume()))
        app.router.add_post("/undrain", self._command(lambda e, _b: e.undrain()))
        app.router.add_post("/drain", self._command(
            lambda e, b: e.drain(exit_when_drained=bool(b.get("exit_when_drained")))))
        app.router.add_post("/cancel/{job_id}", self._cancel)
        return app

    async def start(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        if self.path.is_socket():
            self.path.unlink()  # left by a miner that was killed
        # A viewer that disconnects cancels its stream handler (else it would wait forever
        # for the next snapshot or event, and hold up stop()).
        self._runner = web.AppRunner(self._app(), handle_signals=False,
                                     handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            await web.UnixSite(self._runner, str(self.path)).start()
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.path.unlink(missing_ok=True)

    async def _snapshot(self, _request: web.Request) -> web.Response:
        return web.json_response(to_jsonable(self.engine.snapshot()))

    async def _snapshots(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        latest: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize=1)  # a slow viewer skips

        def on_snapshot(snapshot: Snapshot) -> None:
            if latest.full():
                latest.get_nowait()
            latest.put_nowait(snapshot)

        remove = self.engine.add_listener(on_snapshot)
        try:
            snapshot = self.engine.snapshot()
            while True:
                line = json.dumps(to_jsonable(snapshot), separators=(",", ":"))
                await response.write(line.encode() + b"\n")
                snapshot = await latest.get()
        except ConnectionResetError:
            pass  # the viewer went away
        finally:
            remove()
        return response

    async def _receipt(self, request: web.Request) -> web.Response:
        body = await self.engine.receipt_body(request.match_info["receipt_id"])
        if body is None:
            return web.json_response({"status": "unknown receipt"}, status=404)
        return web.json_response(body)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        subscription = self.engine.subscribe()
        try:
            async for event in subscription:
                line = json.dumps(to_jsonable(event), separators=(",", ":"))
                await response.write(line.encode() + b"\n")
        except ConnectionResetError:
            pass  # the viewer went away
        finally:
            subscription.close()
        return response

    def _command(self, act: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json() if request.can_read_body else {}
            act(self.engine, body if isinstance(body, dict) else {})
            return web.json_response({"status": "ok", "mode": self.engine.snapshot().mode.value})

        return handler

    async def _cancel(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        if not self.engine.cancel(job_id):
            return web.json_response({"status": "unknown job", "job_id": job_id}, status=404)
        return web.json_response({"status": "ok", "job_id": job_id})
