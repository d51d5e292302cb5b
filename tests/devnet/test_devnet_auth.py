"""Credentials and identity, per dialect (spec: Authentication and identity)."""

from __future__ import annotations

import httpx
import pytest
from devnet_helpers import MINER_KEY, MinerClient

from aitbc_miner.devnet import DEFAULT_JWT_SECRET, Devnet, Dialect, make_jwt
from aitbc_miner.devnet.tokens import decode_jwt

V01, V08 = Dialect.V2026_01, Dialect.V2026_08
REGISTER = {"capabilities": {}, "concurrency": 1}


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer nope"}])
async def test_miner_routes_refuse_bad_or_missing_keys(
    http: httpx.AsyncClient, headers: dict
) -> None:
    for path in ("/miners/register", "/miners/heartbeat", "/miners/poll"):
        response = await http.post(path, json=REGISTER, headers=headers)
        assert response.status_code == 401, path
        assert isinstance(response.json()["detail"], str)


async def test_identity_rules(devnet: Devnet, miner: MinerClient) -> None:
    """2026-01: the key string itself; 2026-08: X-Miner-ID when sent."""
    assert (await miner.register()).status_code == 200
    expected = MINER_KEY if devnet.dialect is V01 else "rig-1"
    assert list(devnet.miners) == [expected]


async def test_identity_without_miner_id_header_is_the_key(
    devnet: Devnet, http: httpx.AsyncClient
) -> None:
    response = await http.post("/miners/register", json=REGISTER, headers={"X-Api-Key": MINER_KEY})
    assert response.status_code == 200
    assert list(devnet.miners) == [MINER_KEY]


async def test_miner_jwt_accepted_on_2026_08_only(devnet: Devnet, http: httpx.AsyncClient) -> None:
    token = make_jwt(DEFAULT_JWT_SECRET, sub="jwt-rig", role="miner")
    response = await http.post(
        "/miners/register", json=REGISTER, headers={"Authorization": f"Bearer {token}"}
    )
    if devnet.dialect is V01:
        assert response.status_code == 401
    else:
        assert response.status_code == 200
        assert list(devnet.miners) == ["jwt-rig"]


async def test_client_token_is_not_a_miner_credential(
    devnet: Devnet, http: httpx.AsyncClient
) -> None:
    token = make_jwt(DEFAULT_JWT_SECRET, sub="c", role="client")
    response = await http.post(
        "/miners/register", json=REGISTER, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


async def test_client_routes_auth(devnet: Devnet, http: httpx.AsyncClient) -> None:
    body = {"payload": {"type": "echo", "data": "x"}}
    ok = await http.post("/jobs", json=body, headers=devnet.client_headers())
    assert ok.status_code == 201
    with_key = await http.post("/jobs", json=body, headers={"X-Api-Key": devnet.auth.client_key})
    assert with_key.status_code == (201 if devnet.dialect is V01 else 403)
    assert (await http.post("/jobs", json=body)).status_code == 401
    wrong = await http.post("/jobs", json=body, headers={"X-Api-Key": "nope"})
    assert wrong.status_code == (401 if devnet.dialect is V01 else 403)
    job_id = ok.json()["job_id"]
    assert (await http.get(f"/jobs/{job_id}")).status_code == 401


@pytest.mark.parametrize("dialect", [V08])
async def test_2026_08_client_token_checks(http: httpx.AsyncClient, devnet: Devnet) -> None:
    body = {"payload": {"type": "echo", "data": "x"}}
    forged = make_jwt("other-secret", sub="c", role="client")
    miner_role = make_jwt(DEFAULT_JWT_SECRET, sub="c", role="miner")
    expired = make_jwt(DEFAULT_JWT_SECRET, sub="c", role="client", exp=devnet.clock.now() - 1)
    for token, status in ((forged, 401), (miner_role, 403), (expired, 401)):
        response = await http.post("/jobs", json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == status, token


async def test_health_path_per_dialect(devnet: Devnet) -> None:
    async with httpx.AsyncClient(base_url=devnet.url) as http:
        good = await http.get(devnet.health_path)
        other = "/v1/health" if devnet.dialect is V08 else "/health"
        assert good.status_code == 200 and good.json()["status"] == "ok"
        assert (await http.get(other)).status_code == 404


async def test_2026_08_only_routes(
    devnet: Devnet, miner: MinerClient, http: httpx.AsyncClient
) -> None:
    await miner.register()
    earnings = await http.post(f"/miners/{miner.id}/earnings", headers=miner.headers)
    delete = await http.delete(f"/miners/{miner.id}", headers=miner.headers)
    if devnet.dialect is V01:
        assert earnings.status_code in (404, 405) and delete.status_code in (404, 405)
    else:
        assert earnings.status_code == 200 and delete.status_code == 200


def test_jwt_roundtrip_and_tamper() -> None:
    token = make_jwt("s", sub="a", role="client", exp=200)
    assert decode_jwt(token, "s", now=100) == {"sub": "a", "role": "client", "exp": 200}
    assert decode_jwt(token, "s", now=200) is None
    assert decode_jwt(token, "t", now=100) is None
    head, _claims, sig = token.split(".")
    forged_claims = make_jwt("x", sub="b", role="client").split(".")[1]
    assert decode_jwt(f"{head}.{forged_claims}.{sig}", "s", now=100) is None
    assert decode_jwt("not-a-token", "s", now=0) is None
    assert decode_jwt("a.b.c", "s", now=0) is None
