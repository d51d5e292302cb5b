"""Files a job leaves under its ``out/`` folder: hashed, then sent inline or uploaded.

Every regular file gets a manifest row (``path``, ``size``, ``sha256``). Small files
travel inline, base64, in the result; larger ones are POSTed (multipart/form-data) to the
configured upload URL before the result is submitted, and their row carries what the
store answered. A symlink or other non-regular file is never followed (a job could
point one at a host file); it is listed as skipped.

Uploads retry only what may succeed on a second try: network errors, 408, 429 and 5xx,
with the shared backoff and the server's ``Retry-After``. Any other 4xx fails at once
(413: ``E_OUTPUT_LIMIT``; others: ``E_INTERNAL``, a miner-side configuration problem);
retries that run out give ``E_BACKEND_UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import untrusted
from .backoff import Backoff
from .codes import ErrorCode
from .protocol import is_job_id, shown_job_id
from .runners.base import JobFailed
from .runners.settings import ArtifactSettings

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read per step while hashing or uploading
RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True, slots=True)
class Artifact:
    path: str  # relative to out/, with '/' separators
    file: Path
    size: int
    sha256: str

    def row(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def collect(out_dir: Path, max_files: int) -> tuple[list[Artifact], list[dict[str, Any]]]:
    """Hash every regular file under ``out_dir`` (blocking; call it in a thread)."""
    found: list[Artifact] = []
    skipped: list[dict[str, Any]] = []
    if not out_dir.is_dir() or out_dir.is_symlink():
        return found, skipped
    for root, dirs, files in os.walk(out_dir, followlinks=False):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]  # not descended
        for name in sorted(files) + sorted(links):
            file = Path(root, name)
            relative = file.relative_to(out_dir).as_posix()
            mode = file.lstat().st_mode
            if not stat.S_ISREG(mode):
                kind = "symlink" if stat.S_ISLNK(mode) else "not a regular file"
                skipped.append({"path": relative, "skipped": kind})
                continue
            if len(found) >= max_files:
                raise JobFailed(ErrorCode.E_OUTPUT_LIMIT,
                                f"artifacts.max_files: more than {max_files} files under out/")
            found.append(_hashed(file, relative))
    return found, skipped


def _hashed(file: Path, relative: str) -> Artifact:
    digest = hashlib.sha256()
    size = 0
    with file.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Artifact(relative, file, size, digest.hexdigest())


class Uploader:
    """POSTs one artifact at a time to the artifact store, retrying what may be retried."""

    def __init__(self, url: str, *, attempts: int = 5, timeout_s: float = 120.0,
                 headers: Mapping[str, str] | None = None, backoff: Backoff | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.backoff = backoff
        self.transport = transport

    async def upload_all(self, job_id: str, artifacts: list[Artifact]) -> list[dict[str, Any]]:
        if not is_job_id(job_id):  # never put into a URL (docs/hostile-input.md)
            raise JobFailed(ErrorCode.E_BADJOB, f"invalid job id {shown_job_id(job_id)}")
        url = self.url.replace("{job_id}", job_id)
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
            return [await self._upload(client, url, job_id, a) for a in artifacts]

    async def _upload(self, client: httpx.AsyncClient, url: str, job_id: str,
                      artifact: Artifact) -> dict[str, Any]:
        backoff = self.backoff or Backoff(base_s=0.5, cap_s=10.0)
        backoff.reset()
        last = ""
        for attempt in range(1, self.attempts + 1):
            boundary = secrets.token_hex(16)
            head, tail = _multipart_frame(boundary, job_id, artifact)
            try:
                response = await client.post(
                    url, content=_body(head, artifact.file, tail),
                    headers={**self.headers,
                             "Content-Type": f"multipart/form-data; boundary={boundary}",
                             "Content-Length": str(len(head) + artifact.size + len(tail))})
            except httpx.TransportError as exc:
                last, retry_after = f"{type(exc).__name__}: {exc}", None
            else:
                if response.is_success:
                    return {**artifact.row(), "delivery": "uploaded", **_stored(response)}
                last = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUS:
                    raise _refused(artifact, response)
                retry_after = _retry_after(response)
            if attempt == self.attempts:
                break
            delay = backoff.next_delay(retry_after)
            log.warning("upload of out/%s failed (attempt %d of %d: %s); retrying in %.2fs",
                        artifact.path, attempt, self.attempts, last, delay)
            await asyncio.sleep(delay)
        raise JobFailed(ErrorCode.E_BACKEND_UNAVAILABLE,
                        f"artifacts.upload_url: out/{artifact.path} could not be uploaded after "
                        f"{self.attempts} attempts (last: {last})")


def _multipart_frame(boundary: str, job_id: str, artifact: Artifact) -> tuple[bytes, bytes]:
    fields = {"job_id": job_id, "path": artifact.path, "size": str(artifact.size),
              "sha256": artifact.sha256}
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             for k, v in fields.items()]
    name = artifact.path.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n')
    return "".join(parts).encode(), f"\r\n--{boundary}--\r\n".encode()


async def _body(head: bytes, file: Path, tail: bytes) -> AsyncIterator[bytes]:
    yield head
    with file.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
    yield tail


def _stored(response: httpx.Response) -> dict[str, Any]:
    try:
        data = untrusted.loads(response.content)
    except untrusted.Malformed:
        return {}
    return {k: data[k] for k in ("artifact_id", "url") if isinstance(data, dict) and k in data}


def _refused(artifact: Artifact, response: httpx.Response) -> JobFailed:
    what = f"out/{artifact.path} was refused by the artifact store (HTTP {response.status_code})"
    if response.status_code == 413:
        return JobFailed(ErrorCode.E_OUTPUT_LIMIT, f"artifacts.upload_url: {what}: too large")
    return JobFailed(ErrorCode.E_INTERNAL, f"artifacts.upload_url: {what}; check the URL and "
                     "credentials")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


async def deliver(job_id: str, out_dir: Path, settings: ArtifactSettings,
                  uploader: Uploader | None = None) -> list[dict[str, Any]]:
    """The manifest of ``out_dir``: inline what fits, upload the rest, or fail.

    Raises:
        JobFailed: E_OUTPUT_LIMIT (too many files, or a file too large to inline with no
            upload URL), or what the upload answered (see the module docstring).
    """
    artifacts, manifest = await asyncio.to_thread(collect, out_dir, settings.max_files)
    inline_total = 0
    to_upload: list[Artifact] = []
    rows: list[dict[str, Any]] = []
    for artifact in artifacts:
        fits = (artifact.size <= settings.inline_max_bytes
                and inline_total + artifact.size <= settings.inline_total_bytes)
        if fits:
            inline_total += artifact.size
            data = await asyncio.to_thread(artifact.file.read_bytes)
            rows.append({**artifact.row(), "delivery": "inline", "encoding": "base64",
                         "data": base64.b64encode(data).decode()})
        elif uploader is not None:
            to_upload.append(artifact)
        else:
            raise JobFailed(ErrorCode.E_OUTPUT_LIMIT,
                            f"artifacts.inline_max_bytes: out/{artifact.path} ({artifact.size} "
                            f"bytes) does not fit inline ({settings.inline_max_bytes} per file, "
                            f"{settings.inline_total_bytes} per result) and no upload URL is set")
    if to_upload and uploader is not None:
        rows += await uploader.upload_all(job_id, to_upload)
    return sorted(rows, key=lambda r: r["path"]) + manifest
