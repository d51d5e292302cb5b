"""The reference coordinator's artifact endpoint (for tests), with injectable failures.

``POST /v1/miners/{job_id}/artifacts`` takes multipart/form-data (``job_id``, ``path``,
``size``, ``sha256``, ``file``), checks size and digest, and answers
``{"artifact_id", "url"}``; ``GET /v1/jobs/{job_id}/artifacts/{artifact_id}`` returns the
bytes. ``fail_next`` arms answers given instead of storing: an HTTP status, or "drop"
to close the connection without a reply.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import BodyPartReader, web

AuthCheck = Callable[[Mapping[str, str]], object]  # raises to refuse


class ArtifactStore:
    def __init__(self, check_auth: AuthCheck | None = None) -> None:
        self.blobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures: deque[int | str] = deque()
        self.attempts = 0
        self.check_auth = check_auth

    def fail_next(self, *answers: int | str) -> None:
        self.failures.extend(answers)

    def add_routes(self, router: web.UrlDispatcher, prefix: str = "/v1") -> None:
        router.add_post(f"{prefix}/miners/{{job_id}}/artifacts", self.upload)
        router.add_get(f"{prefix}/jobs/{{job_id}}/artifacts/{{artifact_id}}", self.download)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.failures:
            answer = self.failures.popleft()
            if answer == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=599)
            headers = {"Retry-After": "0"} if answer == 429 else {}
            return web.json_response({"detail": f"injected {answer}"}, status=int(answer),
                                     headers=headers)
        if self.check_auth is not None:
            try:
                self.check_auth(request.headers)
            except Exception as exc:  # the devnet's HttpError carries status and detail
                return web.json_response({"detail": getattr(exc, "detail", str(exc))},
                                         status=getattr(exc, "status", 401))
        fields: dict[str, str] = {}
        data = b""
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart is not an artifact upload
            if part.name == "file":
                data = await part.read()
            else:
                fields[str(part.name)] = await part.text()
        job_id = request.match_info["job_id"]
        if (fields.get("job_id") != job_id or int(fields.get("size", -1)) != len(data)
                or fields.get("sha256") != hashlib.sha256(data).hexdigest()):
            return web.json_response({"detail": "size or sha256 does not match"}, status=400)
        artifact_id = secrets.token_hex(8)
        self.blobs[(job_id, artifact_id)] = {"path": fields.get("path"), "data": data}
        return web.json_response({"artifact_id": artifact_id,
                                  "url": f"/v1/jobs/{job_id}/artifacts/{artifact_id}"}, status=201)

    async def download(self, request: web.Request) -> web.Response:
        blob = self.blobs.get((request.match_info["job_id"], request.match_info["artifact_id"]))
        if blob is None:
            return web.json_response({"detail": "artifact not found"}, status=404)
        return web.Response(body=blob["data"], content_type="application/octet-stream")


async def serve(store: ArtifactStore) -> tuple[web.AppRunner, str]:
    """Run ``store`` on a loopback port; returns the runner (to clean up) and base URL."""
    app = web.Application()
    store.add_routes(app.router)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
