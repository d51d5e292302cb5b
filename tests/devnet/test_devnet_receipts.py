"""Receipts: fields, billing rules, signature, 2026-08 post-signing keys, signing off."""

from __future__ import annotations

import httpx
import pytest
from devnet_helpers import MINER_KEY, MinerClient

from aitbc_miner.devnet import Devnet, Dialect, FakeClock
from aitbc_miner.protocol import POST_SIGNING_KEYS, Receipt
from aitbc_miner.receipts import Verdict, verify

V01, V08 = Dialect.V2026_01, Dialect.V2026_08
PAYLOAD = {"type": "sha256", "data": "abc"}


async def _run(devnet: Devnet, miner: MinerClient, result: dict, metrics: dict) -> dict:
    await miner.register()
    job = await devnet.submit_job(PAYLOAD, {"models": None})
    assert (await miner.poll()).status_code == 200
    response = await miner.post(f"/miners/{job['job_id']}/result",
                                {"result": result, "metrics": metrics})
    assert response.status_code == 200 and response.json()["status"] == "ok"
    return dict(response.json()["receipt"])


async def test_receipt_fields_and_signature(
    devnet: Devnet, miner: MinerClient, clock: FakeClock
) -> None:
    start = clock.now()
    receipt = await _run(devnet, miner, {"output": "x"}, {"duration_ms": 2500})
    Receipt.model_validate(receipt)
    assert receipt["version"] == "1.0" and receipt["status"] == "COMPLETED"
    assert receipt["provider"] == miner.id
    assert receipt["units"] == 2.5 and receipt["unit_type"] == "gpu_seconds"
    assert receipt["unit_price"] == 0.02 and receipt["price"] == 0.05
    assert receipt["started_at"] == int(start) and isinstance(receipt["completed_at"], int)
    assert receipt["metadata"]["job_payload"] == PAYLOAD
    assert receipt["metadata"]["result"] == {"output": "x"}
    assert receipt["metadata"]["metrics"] == {"duration_ms": 2500}
    assert receipt["client"]
    check = verify(receipt, pinned_key=devnet.public_key_id, job_id=receipt["job_id"])
    assert check.verdict is Verdict.VALID_PINNED
    assert (set(receipt) >= POST_SIGNING_KEYS) == (devnet.dialect is V08)


@pytest.mark.parametrize("dialect", [V08])
async def test_post_signing_keys_are_outside_the_signature(
    devnet: Devnet, miner: MinerClient
) -> None:
    receipt = await _run(devnet, miner, {"output": "x"}, {"duration_ms": 1000})
    assert receipt["zk_status"] == "not_requested" and receipt["tee_status"] == "not_requested"
    receipt["zk_status"] = "verified"  # post-signing: changing it must not break the signature
    assert verify(receipt).verdict is Verdict.VALID_UNPINNED
    receipt["price"] = 99.0
    assert verify(receipt).verdict is Verdict.INVALID


@pytest.mark.parametrize(
    ("result", "metrics", "units", "price"),
    [
        ({"units": 4}, {"units": 3, "duration_ms": 9000}, 3.0, 0.06),
        ({"units": 4}, {"duration_ms": 9000}, 4.0, 0.08),
        ({}, {"duration_ms": 1500, "unit_price": 0.1}, 1.5, 0.15),
        ({}, {"duration_ms": 1000, "price": 7}, 1.0, 7.0),
        ({}, {"duration_ms": 333}, 0.333, 0.00666),
    ],
)
async def test_billing_rules(
    devnet: Devnet, miner: MinerClient, result: dict, metrics: dict, units: float, price: float
) -> None:
    receipt = await _run(devnet, miner, result, metrics)
    assert receipt["units"] == pytest.approx(units)
    assert receipt["price"] == pytest.approx(price)


async def test_missing_duration_is_filled_on_2026_01_only(
    devnet: Devnet, miner: MinerClient, clock: FakeClock
) -> None:
    """2026-01 bills the time since submission (queue wait included) when no duration_ms."""
    await miner.register()
    job = await devnet.submit_job(PAYLOAD)
    clock.advance(40)
    await miner.poll()
    clock.advance(2)
    receipt = (await miner.result(job["job_id"], metrics={"gpu_utilization": 50})).json()["receipt"]
    if devnet.dialect is V01:
        assert receipt["metadata"]["metrics"]["duration_ms"] == 42000
        assert receipt["units"] == 42.0
    else:
        assert "duration_ms" not in receipt["metadata"]["metrics"]
        assert receipt["units"] == 0.0


async def test_receipt_signing_off_answers_null(dialect: Dialect) -> None:
    async with Devnet(dialect, miner_keys=[MINER_KEY], receipt_signing=False,
                      rate_limits=False) as devnet:
        assert devnet.public_key_id is None
        async with httpx.AsyncClient(base_url=devnet.api_url) as http:
            miner = MinerClient(http, devnet, "rig-1")
            await miner.register()
            job = await devnet.submit_job(PAYLOAD)
            await miner.poll()
            response = await miner.result(job["job_id"])
            assert response.json() == {"status": "ok", "receipt": None}
            assert devnet.jobs[job["job_id"]]["result_calls"] == 1
            result = await http.get(f"/jobs/{job['job_id']}/result",
                                    headers=devnet.client_headers())
            assert result.json() == {"result": {"output": "ok"}, "receipt": None}
            missing = await http.get(f"/jobs/{job['job_id']}/receipt",
                                     headers=devnet.client_headers())
            assert missing.status_code == 404


async def test_given_signing_key_is_used(dialect: Dialect) -> None:
    seed = bytes(range(32))
    async with Devnet(dialect, signing_key=seed.hex(), rate_limits=False) as devnet:
        again = Devnet(dialect, signing_key=seed)
        await again.start()
        try:
            assert devnet.public_key_id == again.public_key_id
        finally:
            await again.stop()
