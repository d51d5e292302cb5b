"""register / heartbeat / poll / result / fail / earnings / deregister, quirks included."""

from __future__ import annotations

import httpx
import pytest
from devnet_helpers import MinerClient

from aitbc_miner.devnet import Devnet, Dialect

V01, V08 = Dialect.V2026_01, Dialect.V2026_08
ECHO = {"type": "echo", "data": "hi"}


async def _assigned(devnet: Devnet, miner: MinerClient, payload: dict = ECHO) -> str:
    job = await devnet.submit_job(payload)
    response = await miner.poll()
    assert response.status_code == 200
    assert response.json()["job_id"] == job["job_id"]
    return str(job["job_id"])


async def test_register_answer_and_state(devnet: Devnet, miner: MinerClient) -> None:
    response = await miner.register({"gpus": [{"name": "RTX 4090", "memory_mb": 24564}]}, 2, "eu")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and isinstance(body["session_token"], str)
    row = devnet.miners[miner.id]
    assert ((row["status"], row["concurrency"], row["region"], row["inflight"])
            == ("ONLINE", 2, "eu", 0))


async def test_register_validation_is_422(miner: MinerClient) -> None:
    response = await miner.post("/miners/register", {"capabilities": [], "concurrency": "many"})
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert (
        await miner.http.post("/miners/register", content=b"{bad", headers=miner.headers)
    ).status_code == 422


async def test_unregistered_miner(miner: MinerClient) -> None:
    heartbeat = await miner.heartbeat(0)
    assert heartbeat.status_code == 404
    assert heartbeat.json() == {"detail": "miner not registered"}
    poll = await miner.poll()
    assert poll.status_code == 500


async def test_poll_empty_is_204_with_empty_body(miner: MinerClient) -> None:
    await miner.register()
    response = await miner.poll()
    assert response.status_code == 204 and response.content == b""


async def test_poll_answer_shape(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job = await devnet.submit_job(ECHO, {"models": ["m"], "unknown_key": 1})
    await miner.register({"models": ["m"]})
    body = (await miner.poll()).json()
    assert body["job_id"] == job["job_id"] and body["payload"] == ECHO
    constraints = body["constraints"]
    for key in ("gpu", "cuda", "min_vram_gb", "models", "region", "max_price"):
        assert key in constraints
    assert constraints["gpu"] is None and constraints["models"] == ["m"]
    assert constraints["unknown_key"] == 1
    extra = {"zk_proof_required", "tee_attestation_required", "min_reputation", "confidential"}
    assert extra <= set(constraints) if devnet.dialect is V08 else not extra & set(constraints)
    assert devnet.jobs[job["job_id"]]["state"] == "RUNNING"
    assert devnet.jobs[job["job_id"]]["assigned_miner_id"] == miner.id


async def test_inflight_gates_polling_and_result_releases(
    devnet: Devnet, miner: MinerClient
) -> None:
    await miner.register(concurrency=1)
    first = await _assigned(devnet, miner)
    await devnet.submit_job(ECHO)
    assert miner.inflight() == 1
    assert (await miner.poll()).status_code == 204  # inflight >= concurrency
    assert (await miner.result(first)).status_code == 200
    assert miner.inflight() == 0
    assert (await miner.poll()).status_code == 200


async def test_concurrency_zero_means_unlimited(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register(concurrency=0)
    for _ in range(3):
        await devnet.submit_job(ECHO)
    for _ in range(3):
        assert (await miner.poll()).status_code == 200
    assert miner.inflight() == 3


async def test_heartbeat_overwrites_inflight(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register(concurrency=2)
    assert (await miner.heartbeat(7)).json() == {"status": "ok"}
    assert miner.inflight() == 7
    await devnet.submit_job(ECHO)
    assert (await miner.poll()).status_code == 204
    await miner.heartbeat(1)
    assert (await miner.poll()).status_code == 200
    assert miner.inflight() == 2


async def test_result_never_goes_below_zero(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job = await devnet.submit_job(ECHO)
    await miner.result(job["job_id"])
    assert miner.inflight() == 0


async def test_register_resets_inflight(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    await _assigned(devnet, miner)
    assert miner.inflight() == 1
    await miner.register()
    assert miner.inflight() == 0


async def test_fail_inflight_quirk_and_error_text(
    devnet: Devnet, miner: MinerClient, http: httpx.AsyncClient
) -> None:
    """2026-01 releases the slot on /fail; 2026-08 does not, until a heartbeat says so."""
    await miner.register()
    job_id = await _assigned(devnet, miner)
    response = await miner.fail(job_id, "E_UNSUPPORTED", "no runner for transcribe")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    view = (await http.get(f"/jobs/{job_id}", headers=devnet.client_headers())).json()
    assert view["state"] == "FAILED"
    if devnet.dialect is V01:
        assert view["error"] == "E_UNSUPPORTED: no runner for transcribe"
        assert miner.inflight() == 0
    else:
        assert view["error"] == "no runner for transcribe"
        assert miner.inflight() == 1
        await devnet.submit_job(ECHO)
        assert (await miner.poll()).status_code == 204
        await miner.heartbeat(0)
        assert (await miner.poll()).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"error_code": "E_X"}, {"error_message": "m"}, {"error_code": 1, "error_message": "m"}, {}],
)
async def test_fail_requires_both_strings(devnet: Devnet, miner: MinerClient, body: dict) -> None:
    await miner.register()
    job = await devnet.submit_job(ECHO)
    assert (await miner.post(f"/miners/{job['job_id']}/fail", body)).status_code == 422


async def test_unknown_job_is_404(miner: MinerClient) -> None:
    await miner.register()
    result = await miner.result("nope")
    assert result.status_code == 404 and result.json() == {"detail": "job not found"}
    assert (await miner.fail("nope")).status_code == 404


async def test_second_result_makes_second_receipt(
    devnet: Devnet, miner: MinerClient, http: httpx.AsyncClient
) -> None:
    await miner.register()
    job_id = await _assigned(devnet, miner)
    first = (await miner.result(job_id)).json()["receipt"]
    second = (await miner.result(job_id)).json()["receipt"]
    assert first["receipt_id"] != second["receipt_id"]
    assert devnet.jobs[job_id]["receipts"] == 2 and devnet.jobs[job_id]["result_calls"] == 2
    items = (await http.get(f"/jobs/{job_id}/receipts",
                            headers=devnet.client_headers())).json()["items"]
    assert [r["receipt_id"] for r in items] == [first["receipt_id"], second["receipt_id"]]
    latest = (await http.get(f"/jobs/{job_id}/receipt", headers=devnet.client_headers())).json()
    assert latest["receipt_id"] == second["receipt_id"]


async def test_result_checks_neither_state_nor_holder(
    devnet: Devnet, miner: MinerClient, other_miner: MinerClient, http: httpx.AsyncClient
) -> None:
    await miner.register()
    await other_miner.register()
    job_id = await _assigned(devnet, miner)
    cancel = await http.post(f"/jobs/{job_id}/cancel", headers=devnet.client_headers())
    assert cancel.json()["state"] == "CANCELED"
    response = await other_miner.result(job_id)
    assert response.status_code == 200
    assert response.json()["receipt"]["provider"] == other_miner.id


async def test_heartbeat_offline_status_and_metadata(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    body = {"inflight": 0, "status": "OFFLINE", "metadata": {"v": 1}, "architecture": "x86_64"}
    assert (await miner.post("/miners/heartbeat", body)).status_code == 200
    row = devnet.miners[miner.id]
    assert row["status"] == "OFFLINE"
    expected = {"v": 1, "architecture": "x86_64"} if devnet.dialect is V08 else {"v": 1}
    assert row["metadata"] == expected


@pytest.mark.parametrize("dialect", [V08])
async def test_earnings_one_entry_per_receipt(
    devnet: Devnet, miner: MinerClient, http: httpx.AsyncClient
) -> None:
    await miner.register()
    job_id = await _assigned(devnet, miner)
    await miner.result(job_id, metrics={"duration_ms": 2000})
    await miner.result(job_id, metrics={"duration_ms": 1000})
    body = (await http.post(f"/miners/{miner.id}/earnings", headers=miner.headers)).json()
    assert body["miner_id"] == miner.id and body["currency"] == "AITBC"
    assert body["earnings_history"] == [
        {"job_id": job_id, "amount": "0.04", "currency": "AITBC", "payment_status": "pending"},
        {"job_id": job_id, "amount": "0.02", "currency": "AITBC", "payment_status": "pending"},
    ]
    assert body["total_earnings"] == pytest.approx(0.06) and body["completed_jobs"] == 1
    assert "error" not in body


@pytest.mark.parametrize("dialect", [V08])
async def test_earnings_errors_are_200(miner: MinerClient, http: httpx.AsyncClient) -> None:
    response = await http.post("/miners/ghost/earnings", headers=miner.headers)
    assert response.status_code == 200 and response.json()["error"] == "miner not found"
    assert (await http.post("/miners/ghost/earnings")).status_code == 401


@pytest.mark.parametrize("dialect", [V08])
async def test_deregister(devnet: Devnet, miner: MinerClient, http: httpx.AsyncClient) -> None:
    await miner.register()
    response = await http.delete(f"/miners/{miner.id}", headers=miner.headers)
    assert response.status_code == 200 and response.json()["status"] == "deregistered"
    assert devnet.miners[miner.id]["status"] == "OFFLINE"
    missing = await http.delete("/miners/ghost", headers=miner.headers)
    assert missing.status_code == 404 and missing.json() == {"detail": "miner not found"}
