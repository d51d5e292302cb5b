"""Client routes: job view, result (425), cancel (409), receipts, TTL expiry on read."""

from __future__ import annotations

from datetime import datetime

import httpx
from devnet_helpers import MinerClient

from aitbc_miner.devnet import Devnet, FakeClock
from aitbc_miner.protocol import JobView

ECHO = {"type": "echo", "data": "x"}


async def _get(http: httpx.AsyncClient, devnet: Devnet, path: str) -> httpx.Response:
    return await http.get(path, headers=devnet.client_headers())


async def test_create_and_view(devnet: Devnet, http: httpx.AsyncClient, clock: FakeClock) -> None:
    response = await http.post("/jobs", json={"payload": ECHO}, headers=devnet.client_headers())
    assert response.status_code == 201
    view = response.json()
    JobView.model_validate(view)
    assert set(view) == {"job_id", "state", "assigned_miner_id", "requested_at", "expires_at",
                         "error"}
    assert view["state"] == "QUEUED" and view["assigned_miner_id"] is None and view["error"] is None
    requested = datetime.fromisoformat(view["requested_at"])
    expires = datetime.fromisoformat(view["expires_at"])
    assert requested.tzinfo is None and not view["requested_at"].endswith("Z")
    assert (expires - requested).total_seconds() == 900
    assert (await _get(http, devnet, f"/jobs/{view['job_id']}")).json() == view


async def test_create_validation_and_unknown_job(devnet: Devnet, http: httpx.AsyncClient) -> None:
    bad = await http.post("/jobs", json={"constraints": {}}, headers=devnet.client_headers())
    assert bad.status_code == 422
    for path in ("/jobs/nope", "/jobs/nope/result", "/jobs/nope/receipts", "/jobs/nope/receipt"):
        response = await _get(http, devnet, path)
        assert response.status_code == 404 and response.json() == {"detail": "job not found"}, path


async def test_result_is_425_until_completed(
    devnet: Devnet, http: httpx.AsyncClient, miner: MinerClient
) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    assert (await _get(http, devnet, f"/jobs/{job_id}/result")).status_code == 425
    await miner.poll()
    too_early = await _get(http, devnet, f"/jobs/{job_id}/result")
    assert too_early.status_code == 425 and too_early.json() == {"detail": "job not ready"}
    receipt = (await miner.result(job_id, {"output": "x"})).json()["receipt"]
    done = (await _get(http, devnet, f"/jobs/{job_id}/result")).json()
    assert done == {"result": {"output": "x"}, "receipt": receipt}


async def test_result_is_425_for_failed_canceled_expired(
    devnet: Devnet, http: httpx.AsyncClient, miner: MinerClient, clock: FakeClock
) -> None:
    await miner.register(concurrency=0)
    failed = (await devnet.submit_job(ECHO))["job_id"]
    await miner.poll()
    await miner.fail(failed)
    canceled = (await devnet.submit_job(ECHO))["job_id"]
    await http.post(f"/jobs/{canceled}/cancel", headers=devnet.client_headers())
    expired = (await devnet.submit_job(ECHO, ttl_seconds=5))["job_id"]
    clock.advance(6)
    for job_id, state in ((failed, "FAILED"), (canceled, "CANCELED"), (expired, "EXPIRED")):
        assert (await _get(http, devnet, f"/jobs/{job_id}")).json()["state"] == state
        assert (await _get(http, devnet, f"/jobs/{job_id}/result")).status_code == 425


async def test_cancel_rules(devnet: Devnet, http: httpx.AsyncClient, miner: MinerClient) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    await miner.poll()
    canceled = await http.post(f"/jobs/{job_id}/cancel", headers=devnet.client_headers())
    assert canceled.status_code == 200
    assert (canceled.json()["state"] == "CANCELED"
            and canceled.json()["error"] == "canceled by client")
    again = await http.post(f"/jobs/{job_id}/cancel", headers=devnet.client_headers())
    assert again.status_code == 409 and again.json() == {"detail": "job not cancelable"}
    assert miner.inflight() == 1  # a cancel does not release the miner's slot


async def test_ttl_expiry_on_read_and_not_dispatched(
    devnet: Devnet, http: httpx.AsyncClient, miner: MinerClient, clock: FakeClock
) -> None:
    await miner.register(concurrency=0)
    queued = (await devnet.submit_job(ECHO, ttl_seconds=10))["job_id"]
    running = (await devnet.submit_job(ECHO, ttl_seconds=10))["job_id"]
    clock.advance(5)
    assert (await miner.poll()).json()["job_id"] == queued
    assert (await miner.poll()).json()["job_id"] == running
    late = (await devnet.submit_job(ECHO, ttl_seconds=10))["job_id"]
    clock.advance(5)  # queued/running now at expires_at; late still has 5 s
    assert devnet.jobs[queued]["state"] == "RUNNING"  # not read yet
    view = (await _get(http, devnet, f"/jobs/{queued}")).json()
    assert view["state"] == "EXPIRED" and view["error"] == "job expired"
    assert (await _get(http, devnet, f"/jobs/{running}")).json()["state"] == "EXPIRED"
    clock.advance(5)
    assert (await miner.poll()).status_code == 204
    assert devnet.jobs[late]["state"] == "EXPIRED"  # the poll's scan expired it


async def test_receipts_listing_empty_then_items(
    devnet: Devnet, http: httpx.AsyncClient, miner: MinerClient
) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    assert (await _get(http, devnet, f"/jobs/{job_id}/receipts")).json() == {"items": []}
    assert (await _get(http, devnet, f"/jobs/{job_id}/receipt")).status_code == 404
    await miner.poll()
    await miner.result(job_id)
    assert len((await _get(http, devnet, f"/jobs/{job_id}/receipts")).json()["items"]) == 1
