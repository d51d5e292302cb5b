"""The control socket: a running miner's snapshot, events and commands on Unix sockets.

It exposes exactly the engine's public surface, nothing more, so ``aitbc-miner ctl`` (and
a console attached to a headless agent) acts through the same commands as the keys and
the signals. Two sockets share one folder (docs/control-socket.md says who may use which):

- ``control.sock`` takes reads and commands. Mode 0600, or 0660 with ``operator_group``.
- ``control.ro.sock`` takes reads only: every command on it is answered 403 and changes
  nothing. Mode 0600, or 0660 with ``viewer_group`` (else ``operator_group``).

File modes are the first gate; the server is the second, and the one that decides. It
reads each peer's credentials from the kernel (SO_PEERCRED, SO_PEERGROUPS) when it
connects: the agent's own uid, root and members of the operator group may command (on
``control.sock``), members of the viewer group may only watch, anyone else gets 403.
Each socket holds at most ``max_connections`` connections, streams included; one over is
answered 503 and closed at once, before any handler sees it.

Routes (HTTP over the Unix socket, JSON bodies)::

    GET  /snapshot              the current Snapshot (``?receipts=N``: with the newest N
                                receipts; none by default, see /receipts)
    GET  /snapshots             NDJSON stream: the current Snapshot, then each published one
                                (``?receipts=N`` as above)
    GET  /receipts              a page of receipts, newest first: ``?limit=N`` (default 200),
                                ``&before=ID`` older than ID, ``&after=ID`` newer than ID
    GET  /events                NDJSON stream of events (the recent ones first)
    GET  /receipts/{id}         a stored receipt as the coordinator signed it
    GET  /jobs/{job_id}         a job as the journal keeps it, finished or not (404: unknown)
    GET  /jobs/{job_id}/receipts  the receipts stored for that job, oldest first
    GET  /healthz | /readyz     200 or 503: engine running | registered, heartbeat recent
    POST /pause | /resume | /undrain
    POST /drain                 {"exit_when_drained": bool}
    POST /cancel/{job_id}       404 when the miner does not hold the job
"""

from __future__ import annotations

import asyncio
import enum
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from ..engine import Engine, Snapshot
from ..engine.codec import to_jsonable
from .health import add_health_routes

SOCKET_NAME = "control.sock"
READ_ONLY_SOCKET_NAME = "control.ro.sock"
DEFAULT_MAX_CONNECTIONS = 64

log = logging.getLogger(__name__)

_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python lacks the name
_BUSY_BODY = b'{"status":"busy","reason":"too many connections to the control socket"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def read_only_socket_path(socket_path: Path) -> Path:
    """The read-only socket beside the command socket ``socket_path``."""
    return socket_path.with_name(READ_ONLY_SOCKET_NAME)


@dataclass(frozen=True)
class ControlAccess:
    """Who may use the sockets beyond the agent's own user and root, and how many at once."""

    operator_gid: int | None = None
    viewer_gid: int | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class Role(enum.IntEnum):
    NONE = 0  # may not use the socket
    VIEWER = 1  # reads only
    OPERATOR = 2  # reads and commands


@dataclass(frozen=True)
class Peer:
    """A connected client as the kernel saw it when it connected."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def of(cls, sock: Any) -> Peer:
        pid, uid, gid = struct.unpack("iII", sock.getsockopt(  # struct ucred
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return cls(pid, uid, gid, frozenset(_peer_groups(sock)))

    def in_group(self, gid: int | None) -> bool:
        return gid is not None and (self.gid == gid or gid in self.groups)


def _peer_groups(sock: Any) -> tuple[int, ...]:
    """The peer's supplementary groups (empty where the kernel cannot say)."""
    for size in (256, 65536):  # NGROUPS_MAX is 65536
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:  # more groups than the buffer holds
                continue
            return ()
        return struct.unpack(f"{len(raw) // 4}I", raw)
    return ()


def role_of(peer: Peer, access: ControlAccess, *, read_only_socket: bool) -> Role:
    """What ``peer`` may do on one of the two sockets."""
    if peer.uid in (0, os.geteuid()) or peer.in_group(access.operator_gid):
        role = Role.OPERATOR
    elif peer.in_group(access.viewer_gid):
        role = Role.VIEWER
    else:
        return Role.NONE
    return min(role, Role.VIEWER) if read_only_socket else role


class _Gate:
    """One listening socket: counts its open connections and knows each one's role."""

    def __init__(self, server: web.Server, access: ControlAccess, path: Path,
                 read_only: bool, roles: dict[asyncio.BaseTransport, Role]) -> None:
        self.server = server
        self.access = access
        self.path = path
        self.read_only = read_only
        self.roles = roles  # shared by both sockets' gates: the server's view per connection
        self.open = 0
        self._said_full = False

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.access.max_connections:
            if not self._said_full:
                self._said_full = True
                log.warning("control socket %s is full (%d connections): refusing more",
                            self.path, self.open, extra={"path": str(self.path)})
            return _Refused()
        self.open += 1
        if self.open <= self.access.max_connections // 2:
            self._said_full = False  # say it again only after a real ebb, not at each refusal
        return _Counted(self, self.server())

    def role(self, transport: asyncio.BaseTransport) -> Role:
        try:
            peer = Peer.of(transport.get_extra_info("socket"))
        except OSError:
            return Role.NONE
        return role_of(peer, self.access, read_only_socket=self.read_only)


class _Refused(asyncio.Protocol):
    """A connection over the cap: told so and closed before anything reads it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _Counted(asyncio.Protocol):
    """A connection inside the cap: aiohttp's handler, counted while it is open."""

    def __init__(self, gate: _Gate, inner: asyncio.Protocol) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._gate.roles[transport] = self._gate.role(transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.open -= 1
        if self._transport is not None:
            self._gate.roles.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServer:
    def __init__(self, engine: Engine, socket_path: Path,
                 access: ControlAccess | None = None) -> None:
        self.engine = engine
        self.path = socket_path
        self.read_only_path = read_only_socket_path(socket_path)
        self.access = access or ControlAccess()
        self._runner: web.AppRunner | None = None
        self._gates: list[_Gate] = []
        self._roles: dict[asyncio.BaseTransport, Role] = {}
        self._listeners: list[asyncio.Server] = []

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/snapshot", self._snapshot)
        app.router.add_get("/snapshots", self._snapshots)
        app.router.add_get("/events", self._events)
        app.router.add_get("/receipts", self._receipts)
        app.router.add_get("/receipts/{receipt_id}", self._receipt)
        app.router.add_get("/jobs/{job_id}", self._job)
        app.router.add_get("/jobs/{job_id}/receipts", self._job_receipts)
        add_health_routes(app, self.engine)  # GET /healthz, /readyz: any reader may ask
        app.router.add_post("/pause", self._command(lambda e, _b: e.pause()))
        app.router.add_post("/resume", self._command(lambda e, _b: e.resume()))
        app.router.add_post("/undrain", self._command(lambda e, _b: e.undrain()))
        app.router.add_post("/drain", self._command(
            lambda e, b: e.drain(exit_when_drained=bool(b.get("exit_when_drained")))))
        app.router.add_post("/cancel/{job_id}", self._cancel)
        return app

    async def start(self) -> None:
        a = self.access
        shared = a.operator_gid is not None or a.viewer_gid is not None
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Shared: others may pass through (not list) to reach the sockets by name; each
        # socket's own mode and group, then the server, decide who gets in.
        os.chmod(folder, 0o711 if shared else 0o700)
        # A viewer that disconnects cancels its stream handler (else it would wait forever
        # for the next snapshot or event, and hold up stop()).
        self._runner = web.AppRunner(self._app(), handle_signals=False,
                                     handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        viewers = a.viewer_gid if a.viewer_gid is not None else a.operator_gid
        try:
            await self._listen(self.path, a.operator_gid, read_only=False)
            await self._listen(self.read_only_path, viewers, read_only=True)
        except BaseException:
            await self.stop()
            raise

    async def _listen(self, path: Path, gid: int | None, *, read_only: bool) -> None:
        assert self._runner is not None and self._runner.server is not None
        if path.is_socket():
            path.unlink()  # left by a miner that was killed
        gate = _Gate(self._runner.server, self.access, path, read_only, self._roles)
        old_umask = os.umask(0o177)  # born 0600: no window where others may connect
        try:
            listener = await asyncio.get_running_loop().create_unix_server(
                gate, str(path), backlog=128)
        finally:
            os.umask(old_umask)
        self._gates.append(gate)
        self._listeners.append(listener)
        if gid is not None:
            try:
                os.chown(path, -1, gid)
            except PermissionError:
                raise PermissionError(f"cannot give {path} to group {gid}: the miner's user "
                                      "must be a member of it") from None
            os.chmod(path, 0o660)

    async def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        for gate in self._gates:
            gate.path.unlink(missing_ok=True)
        self._gates.clear()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Reads need a viewer, commands an operator on the command socket: else 403."""
        transport = request.transport
        role = self._roles.get(transport, Role.NONE) if transport is not None else Role.NONE
        needed = Role.VIEWER if request.method in ("GET", "HEAD") else Role.OPERATOR
        if role >= needed:
            return await handler(request)
        if role is Role.NONE:
            reason = "this user may not use the miner's control socket"
        else:
            reason = ("read-only: commands need the command socket (control.sock) and a "
                      "user in the operator group")
        return web.json_response({"status": "forbidden", "reason": reason}, status=403)

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(to_jsonable(_light(self.engine.snapshot(), request)))

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
                line = json.dumps(to_jsonable(_light(snapshot, request)), separators=(",", ":"))
                await response.write(line.encode() + b"\n")
                snapshot = await latest.get()
        except ConnectionResetError:
            pass  # the viewer went away
        finally:
            remove()
        return response

    async def _receipts(self, request: web.Request) -> web.Response:
        """A page of the receipts the engine holds (newest first), for viewers that page."""
        query = request.query
        try:
            limit = _count(query.get("limit"), RECEIPT_PAGE)
        except ValueError:
            return web.json_response({"status": "bad limit"}, status=400)
        before, after = query.get("before"), query.get("after")
        if before and after:
            return web.json_response({"status": "before or after, not both"}, status=400)
        held = self.engine.snapshot().receipts
        start, end, more = 0, limit, len(held) > limit
        if before or after:
            index = next((i for i, r in enumerate(held) if r.receipt_id in (before, after)), None)
            if index is None:
                return web.json_response({"status": "unknown receipt"}, status=404)
            if before:  # the page just older than ``before``
                start, end = index + 1, index + 1 + limit
                more = end < len(held)
            else:  # what arrived since ``after``; ``more``: over a page, the oldest left out
                end, more = min(index, limit), index > limit
        return web.json_response({"items": to_jsonable(held[start:end]), "more": more,
                                  "held": len(held)})

    async def _receipt(self, request: web.Request) -> web.Response:
        body = await self.engine.receipt_body(request.match_info["receipt_id"])
        if body is None:
            return web.json_response({"status": "unknown receipt"}, status=404)
        return web.json_response(body)

    async def _job(self, request: web.Request) -> web.Response:
        record = await self.engine.job_record(request.match_info["job_id"])
        if record is None:
            return web.json_response({"status": "unknown job"}, status=404)
        return web.json_response(to_jsonable(record))

    async def _job_receipts(self, request: web.Request) -> web.Response:
        receipts = await self.engine.job_receipts(request.match_info["job_id"])
        return web.json_response({"items": to_jsonable(receipts)})

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

    def _command(self, act: Callable[[Engine, dict[str, Any]], None]) -> Handler:
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


RECEIPT_PAGE = 200  # receipts per page when the viewer names no limit
MAX_RECEIPT_PAGE = 1000


def _count(value: str | None, default: int) -> int:
    """A ``receipts``/``limit`` query value: 0..MAX_RECEIPT_PAGE (ValueError otherwise)."""
    if value is None:
        return default
    n = int(value)
    if not 0 <= n <= MAX_RECEIPT_PAGE:
        raise ValueError(value)
    return n


def _light(snapshot: Snapshot, request: web.Request) -> Snapshot:
    """The snapshot with only the newest ``?receipts=N`` receipts (none by default): what a
    viewer receives costs the same however many receipts the miner holds."""
    try:
        n = _count(request.query.get("receipts"), 0)
    except ValueError:
        n = 0
    return replace(snapshot, receipts=snapshot.receipts[:n])
