"""Artifacts: hashed, inline when small, uploaded (with the right retries) when large."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.artifacts import Uploader, deliver
from aitbc_miner.backoff import Backoff
from aitbc_miner.codes import ErrorCode
from aitbc_miner.devnet import Devnet
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.allowlist import Allowlist
from aitbc_miner.runners.base import JobFailed
from aitbc_miner.runners.cli import CliRunner
from aitbc_miner.runners.settings import ArtifactSettings, RunnerSettings

from .helpers import FAST_KILL, behave, sandbox_or_skip, write_allowlist

SMALL = ArtifactSettings(inline_max_bytes=100, inline_total_bytes=150, max_files=5)


def _out(tmp_path: Path, files: dict[str, bytes]) -> Path:
    out = tmp_path / "out"
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    out.mkdir(exist_ok=True)
    return out


def _uploader(url: str, attempts: int = 5) -> Uploader:
    return Uploader(url + "/v1/miners/{job_id}/artifacts", attempts=attempts,
                    backoff=Backoff(base_s=0.001, cap_s=0.01))


async def test_small_files_travel_inline_with_size_and_sha256(tmp_path):
    # Given two small files, one in a subfolder
    out = _out(tmp_path, {"a.txt": b"hello", "sub/b.bin": bytes(range(50))})
    # When delivered
    manifest = await deliver("j1", out, SMALL)
    # Then each has its digest and size, and the data decodes back
    assert [(m["path"], m["size"], m["delivery"]) for m in manifest] == [
        ("a.txt", 5, "inline"), ("sub/b.bin", 50, "inline")]
    assert manifest[0]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert base64.b64decode(manifest[1]["data"]) == bytes(range(50))


async def test_symlinks_are_listed_never_followed(tmp_path):
    out = _out(tmp_path, {"ok.txt": b"x"})
    os.symlink("/etc/passwd", out / "passwd")
    os.symlink("/etc", out / "etc")
    manifest = await deliver("j1", out, SMALL)
    assert [m["path"] for m in manifest if m.get("delivery") == "inline"] == ["ok.txt"]
    assert {(m["path"], m["skipped"]) for m in manifest if "skipped" in m} == {
        ("passwd", "symlink"), ("etc", "symlink")}


@pytest.mark.parametrize(("files", "rule"), [
    ({"big.bin": b"x" * 101}, "artifacts.inline_max_bytes: out/big.bin (101 bytes)"),
    ({"a": b"x" * 100, "b": b"y" * 100}, "artifacts.inline_max_bytes: out/b (100 bytes)"),
    ({str(i): b"" for i in range(6)}, "artifacts.max_files: more than 5 files"),
])
async def test_too_much_without_an_upload_url_is_e_output_limit(tmp_path, files, rule):
    with pytest.raises(JobFailed) as caught:
        await deliver("j1", _out(tmp_path, files), SMALL)
    assert caught.value.code is ErrorCode.E_OUTPUT_LIMIT
    assert caught.value.message.startswith(rule)


async def test_large_files_are_uploaded_after_retrying_network_408_429_and_5xx(
        tmp_path, artifact_store: Any):
    store, url = artifact_store
    # Given a store that drops the connection, then answers 503, 429, 408 and 502
    store.fail_next("drop", 503, 429, 408, 502)
    data = os.urandom(300_000)
    out = _out(tmp_path, {"model.bin": data, "note.txt": b"small"})
    # When the artifacts are delivered
    manifest = await deliver("j1", out, SMALL, _uploader(url, attempts=6))
    # Then the big one was stored intact on the sixth attempt and the small one is inline
    rows = {m["path"]: m for m in manifest}
    assert rows["note.txt"]["delivery"] == "inline"
    assert rows["model.bin"]["delivery"] == "uploaded" and store.attempts == 6
    stored = store.blobs[("j1", rows["model.bin"]["artifact_id"])]
    assert stored["data"] == data
    assert rows["model.bin"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rows["model.bin"]["url"].endswith(rows["model.bin"]["artifact_id"])


@pytest.mark.parametrize(("status", "code"), [(413, ErrorCode.E_OUTPUT_LIMIT),
                                              (400, ErrorCode.E_INTERNAL),
                                              (401, ErrorCode.E_INTERNAL),
                                              (404, ErrorCode.E_INTERNAL)])
async def test_other_4xx_answers_fail_at_once(tmp_path, artifact_store: Any, status, code):
    store, url = artifact_store
    store.fail_next(status, 503)
    with pytest.raises(JobFailed) as caught:
        await deliver("j1", _out(tmp_path, {"big": b"x" * 500}), SMALL, _uploader(url))
    assert caught.value.code is code and store.attempts == 1
    assert f"(HTTP {status})" in caught.value.message


async def test_retries_that_run_out_are_e_backend_unavailable(tmp_path, artifact_store: Any):
    store, url = artifact_store
    store.fail_next(503, 503, 503)
    with pytest.raises(JobFailed) as caught:
        await deliver("j1", _out(tmp_path, {"big": b"x" * 500}), SMALL, _uploader(url, 3))
    assert caught.value.code is ErrorCode.E_BACKEND_UNAVAILABLE and store.attempts == 3
    assert caught.value.message.endswith("after 3 attempts (last: HTTP 503)")


async def test_the_result_reaches_the_client_with_its_manifest_after_the_upload(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path, artifact_store: Any) -> None:
    store, url = artifact_store
    # Given a job writing one small and one large file, and an upload URL
    folder = write_allowlist(tmp_path / "allowlist.d", {"write": behave("write", args={
        "max_count": 2, "rest": {"type": "string"}})})
    settings = RunnerSettings.model_validate({
        "allowlist_dirs": [folder], "kill": FAST_KILL,
        "artifacts": {"inline_max_bytes": 1000,
                      "upload_url": url + "/v1/miners/{job_id}/artifacts"}})
    cli = CliRunner(settings, allowlist=Allowlist.load([folder]), uploader=_uploader(url),
                    sandbox=sandbox_or_skip())
    big = await devnet.submit_job({"type": "cli", "command": "write", "args": ["big.bin", "5000"]})
    small = await devnet.submit_job({"type": "cli", "command": "write", "args": ["s.bin", "10"]})
    engine = make_engine(devnet.url, registry=RunnerRegistry([cli]),
                         pinned_key=devnet.public_key_id)
    # When both run
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.counters.delivered == 2, timeout=30)
    await running.stop()
    # Then the client gets the manifests: the large file points at the stored upload
    big_result = (await devnet.client_request("GET", f"/jobs/{big['job_id']}/result")).json()
    small_result = (await devnet.client_request("GET", f"/jobs/{small['job_id']}/result")).json()
    [row] = big_result["result"]["artifacts"]
    assert row["delivery"] == "uploaded" and row["size"] == 5000
    assert len(store.blobs[(big["job_id"], row["artifact_id"])]["data"]) == 5000
    [inline] = small_result["result"]["artifacts"]
    assert inline["delivery"] == "inline" and len(base64.b64decode(inline["data"])) == 10
    assert devnet.jobs[big["job_id"]]["state"] == "COMPLETED"


async def test_the_store_refuses_uploads_without_the_miners_credential(tmp_path):
    from aitbc_miner.devnet.artifacts import ArtifactStore, serve

    # Given a store that checks a bearer token
    def check(headers):
        if headers.get("Authorization") != "Bearer good":
            raise PermissionError("bad credential")

    store = ArtifactStore(check_auth=check)
    runner, url = await serve(store)
    out = _out(tmp_path, {"big": b"x" * 500})
    try:
        # When one uploader has the token and one does not
        good = Uploader(url + "/v1/miners/{job_id}/artifacts",
                        headers={"Authorization": "Bearer good"})
        manifest = await deliver("j1", out, SMALL, good)
        with pytest.raises(JobFailed) as caught:
            await deliver("j1", out, SMALL, _uploader(url))
    finally:
        await runner.cleanup()
    # Then only the credentialed upload is stored; the other fails at once (a 401)
    assert manifest[0]["delivery"] == "uploaded"
    assert caught.value.code is ErrorCode.E_INTERNAL and "(HTTP 401)" in caught.value.message
