"""Fault injection, in-process and over /_devnet: statuses, delay, drops, garbled answers."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from devnet_helpers import MinerClient

from aitbc_miner.devnet import Devnet, Fault

ECHO = {"type": "echo", "data": "x"}
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)


async def test_status_burst_then_normal(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    devnet.inject("poll", "status", status=503, times=3)
    answers = [await miner.poll() for _ in range(4)]
    assert [r.status_code for r in answers] == [503, 503, 503, 204]
    assert answers[0].json() == {"detail": "injected 503"}
    assert devnet.state()["requests"]["poll"] == 4
    assert devnet.faults.list() == []


async def test_injected_429_has_retry_after_and_does_not_act(
    devnet: Devnet, miner: MinerClient
) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    await miner.poll()
    devnet.inject("result", "status", status=429, retry_after=7)
    response = await miner.result(job_id)
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert devnet.jobs[job_id]["state"] == "RUNNING" and devnet.jobs[job_id]["receipts"] == 0
    assert miner.inflight() == 1


async def test_status_after_acting_is_uncertain(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    await miner.poll()
    devnet.inject("result", "status", status=500, act=True)
    assert (await miner.result(job_id)).status_code == 500
    assert devnet.jobs[job_id]["state"] == "COMPLETED" and devnet.jobs[job_id]["receipts"] == 1


async def test_delay(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    devnet.inject("heartbeat", "delay", delay=0.3)
    started = time.monotonic()
    response = await miner.heartbeat(0)
    assert response.status_code == 200 and time.monotonic() - started >= 0.3


async def test_drop_before_acting(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    devnet.inject("poll", "drop_before")
    with pytest.raises(DROPPED):
        await miner.poll()
    assert devnet.jobs[job_id]["state"] == "QUEUED" and miner.inflight() == 0
    assert (await miner.poll()).json()["job_id"] == job_id


async def test_drop_after_poll_commits_the_assignment(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    devnet.inject("poll", "drop_after")
    with pytest.raises(DROPPED):
        await miner.poll()
    assert devnet.jobs[job_id]["state"] == "RUNNING" and miner.inflight() == 1


async def test_drop_after_result_commits_receipt(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    await miner.poll()
    devnet.inject("result", "drop_after")
    with pytest.raises(DROPPED):
        await miner.result(job_id)
    job = devnet.jobs[job_id]
    assert (job["state"], job["receipts"], job["result_calls"]) == ("COMPLETED", 1, 1)
    assert miner.inflight() == 0


@pytest.mark.parametrize(
    ("variant", "status", "acted"),
    [
        ("bad_json", 200, True),
        ("missing_fields", 200, True),
        ("wrong_types", 200, True),
        ("html_200", 200, False),
        ("html_502", 502, False),
    ],
)
async def test_malformed_poll_answers(
    devnet: Devnet, miner: MinerClient, variant: str, status: int, acted: bool
) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    devnet.inject("poll", "malformed", variant=variant)
    response = await miner.poll()
    assert response.status_code == status
    assert devnet.jobs[job_id]["state"] == ("RUNNING" if acted else "QUEUED")
    if variant.startswith("html"):
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.startswith("<html>")
    elif variant == "bad_json":
        with pytest.raises(json.JSONDecodeError):
            response.json()
    elif variant == "missing_fields":
        assert "job_id" not in response.json() and response.json()["payload"] == ECHO
    else:
        body = response.json()
        assert isinstance(body["job_id"], int) and not isinstance(body["payload"], dict)


async def test_malformed_result_missing_fields(devnet: Devnet, miner: MinerClient) -> None:
    await miner.register()
    job_id = (await devnet.submit_job(ECHO))["job_id"]
    await miner.poll()
    devnet.inject("result", "malformed", variant="missing_fields")
    assert (await miner.result(job_id)).json() == {}
    assert devnet.jobs[job_id]["receipts"] == 1


async def test_wildcard_and_until_cleared(devnet: Devnet, miner: MinerClient) -> None:
    devnet.inject("*", "status", status=503, times=2)
    assert (await miner.register()).status_code == 503
    assert (await miner.heartbeat(0)).status_code == 503
    assert (await miner.register()).status_code == 200
    devnet.inject("heartbeat", "status", status=502, times=None)
    for _ in range(3):
        assert (await miner.heartbeat(0)).status_code == 502
    devnet.faults.clear()
    assert (await miner.heartbeat(0)).status_code == 200


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        Fault(endpoint="nope", kind="status")
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault(endpoint="poll", kind="explode")
    with pytest.raises(ValueError, match="unknown variant"):
        Fault(endpoint="poll", kind="malformed", variant="xml")
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_dict({"endpoint": "poll", "kind": "status", "colour": "red"})


async def test_admin_routes_drive_faults_and_state(devnet: Devnet, miner: MinerClient) -> None:
    async with httpx.AsyncClient(base_url=devnet.url) as admin:
        armed = await admin.post("/_devnet/faults",
                                 json=[{"endpoint": "poll", "kind": "drop_before"}])
        assert armed.status_code == 200 and armed.json()["faults"][0]["kind"] == "drop_before"
        bad = await admin.post("/_devnet/faults", json={"endpoint": "poll", "kind": "explode"})
        assert bad.status_code == 400 and "unknown fault kind" in bad.json()["detail"]
        await miner.register()
        with pytest.raises(DROPPED):
            await miner.poll()
        await admin.post(
            "/_devnet/faults",
            json={"endpoint": "heartbeat", "kind": "status", "status": 503, "times": None},
        )
        assert len((await admin.get("/_devnet/faults")).json()["faults"]) == 1
        assert (await admin.delete("/_devnet/faults")).json() == {"faults": []}
        assert (await miner.heartbeat(3)).status_code == 200
        job_id = (await devnet.submit_job(ECHO, ttl_seconds=60))["job_id"]
        state = (await admin.get("/_devnet/state")).json()
        row = state["miners"][miner.id]
        assert (row["inflight"], row["concurrency"], row["status"]) == (3, 1, "ONLINE")
        assert row["capabilities"] == {} and row["last_heartbeat"] is not None
        assert state["jobs"][job_id]["state"] == "QUEUED" and state["jobs"][job_id]["receipts"] == 0
        assert state["requests"]["poll"] == 1 and state["requests"]["register"] == 1
        assert state["job_states"] == {"QUEUED": 1}
        now = (await admin.get("/_devnet/clock")).json()["now"]
        assert (await admin.post("/_devnet/clock", json={"advance": 61})).json()["now"] == now + 61
        rep = await admin.post(f"/_devnet/miners/{miner.id}/reputation", json={"reputation": 3})
        assert rep.status_code == 200 and devnet.miners[miner.id]["reputation"] == 3.0
        assert (
            await admin.post("/_devnet/miners/ghost/reputation", json={"reputation": 3})
        ).status_code == 404
    view = await devnet.client_request("GET", f"/jobs/{job_id}")
    assert view.json()["state"] == "EXPIRED"
