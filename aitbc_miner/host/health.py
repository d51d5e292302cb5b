"""Health checks, the same on the metrics listener and on the control socket.

``/healthz`` (liveness): the process answers and the engine's loop is running (started,
not yet finished). ``/readyz`` (readiness): the miner is registered with the coordinator
and a heartbeat was answered within two heartbeat intervals, so it can be handed work.
Both answer 200 or 503 with a small JSON body saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..engine import Engine, Link

Check = Callable[[Engine], tuple[bool, dict[str, Any]]]


def liveness(engine: Engine) -> tuple[bool, dict[str, Any]]:
    snap = engine.snapshot()
    ok = engine.running
    return ok, {"status": "ok" if ok else "not running", "mode": snap.mode.value}


def readiness(engine: Engine) -> tuple[bool, dict[str, Any]]:
    snap = engine.snapshot()
    c = snap.connection
    window = 2 * engine.core.tuning.heartbeat_interval_s
    age = None if c.last_heartbeat_at is None else max(0.0, snap.at - c.last_heartbeat_at)
    if not engine.running:
        reason = "the engine is not running"
    elif c.link is not Link.REGISTERED:
        reason = f"not registered (link {c.link.value}" + (f": {c.reason})" if c.reason else ")")
    elif age is None or age > window:
        reason = f"no heartbeat answered in the last {window:g}s"
    else:
        reason = None
    body: dict[str, Any] = {"status": "ready" if reason is None else "not ready",
                            "link": c.link.value, "heartbeat_age_s": age}
    if reason is not None:
        body["reason"] = reason
    return reason is None, body


def add_health_routes(app: web.Application, engine: Engine) -> None:
    """``GET /healthz`` and ``GET /readyz`` on ``app``."""

    def route(check: Check) -> Callable[[web.Request], Any]:
        async def handler(_request: web.Request) -> web.Response:
            ok, body = check(engine)
            return web.json_response(body, status=200 if ok else 503)

        return handler

    app.router.add_get("/healthz", route(liveness))
    app.router.add_get("/readyz", route(readiness))
