"""``/healthz`` and ``/readyz``: the same answers on the metrics listener and on the control
sockets, over real HTTP (TCP loopback and Unix sockets)."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Engine, SlotPool, Tuning
from aitbc_miner.host.control import ControlAccess
from aitbc_miner.host.metrics import MetricsServer
from aitbc_miner.host.runtime import Host
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.conftest import MINER_KEY
from tests.test_control import raw, shared_dir, test_user  # noqa: F401 (fixtures)


@asynccontextmanager
async def hosted(engine: Engine, socket_path: Path, access: ControlAccess | None = None,
                 ) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The engine run by a Host with metrics on loopback and its control sockets; yields a
    client per listener: ``metrics``, ``control`` (control.sock), ``read_only``."""
    host = Host(engine, drain_grace_s=5.0, metrics_address=("127.0.0.1", 0),
                control_socket=socket_path, control_access=access)
    run = asyncio.create_task(host.run(signals=False))
    try:
        await engine.wait_until(lambda s: s.mode.value != "starting", timeout=20)
        assert host.metrics is not None
        clients = {
            "metrics": httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.metrics.port}"),
            "control": httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
                uds=str(socket_path)), base_url="http://miner"),
            "read_only": httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
                uds=str(socket_path.with_name("control.ro.sock"))), base_url="http://miner"),
        }
        try:
            yield clients
        finally:
            for client in clients.values():
                await client.aclose()
    finally:
        engine.stop()
        async with asyncio.timeout(15):
            await run


async def answers(clients: dict[str, httpx.AsyncClient], path: str) -> dict[str, tuple[int, dict]]:
    out = {}
    for name, client in clients.items():
        response = await client.get(path)
        out[name] = (response.status_code, response.json())
    return out


async def test_a_registered_miner_is_alive_and_ready_on_every_listener(
        devnet: Devnet, make_engine, tmp_path: Path) -> None:
    # Given a miner that registered and had a heartbeat answered
    engine = make_engine(devnet.url)
    async with hosted(engine, tmp_path / "ctl" / "control.sock") as clients:
        await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=20)
        # When each listener is asked
        health = await answers(clients, "/healthz")
        ready = await answers(clients, "/readyz")
    # Then all say alive and ready, alike
    assert {name: code for name, (code, _) in health.items()} == dict.fromkeys(clients, 200)
    assert {name: code for name, (code, _) in ready.items()} == dict.fromkeys(clients, 200)
    assert all(body["status"] == "ready" and body["link"] == "registered"
               for _, body in ready.values())


async def test_a_miner_without_a_coordinator_is_alive_but_not_ready(
        make_engine, tmp_path: Path, unused_tcp_port: int) -> None:
    # Given a miner whose coordinator address has nothing listening
    engine = make_engine(f"http://127.0.0.1:{unused_tcp_port}")
    async with hosted(engine, tmp_path / "ctl" / "control.sock") as clients:
        await engine.wait_until(lambda s: s.connection.link.value == "backing_off", timeout=20)
        health = await answers(clients, "/healthz")
        ready = await answers(clients, "/readyz")
    # Then it is alive (a restart would not help) but not ready, and says why
    assert {code for code, _ in health.values()} == {200}
    assert {code for code, _ in ready.values()} == {503}
    assert all("not registered (link backing_off" in body["reason"] for _, body in ready.values())


async def test_a_heartbeat_older_than_two_intervals_is_not_ready(
        devnet: Devnet, tmp_path: Path) -> None:
    # Given a registered miner whose clock we move (heartbeats every 5 s)
    now = [time.time()]
    engine = Engine(
        Tuning(miner_id="rig-test", coordinator_url=devnet.url, heartbeat_interval_s=5.0),
        miner_key=MINER_KEY, journal_path=tmp_path / "journal.sqlite3",
        workspace_root=tmp_path / "jobs", pool=SlotPool.from_counts(cpu=1, gpu=0),
        registry=RunnerRegistry([BuiltinRunner()]), seed=7, clock=lambda: now[0])
    async with hosted(engine, tmp_path / "ctl" / "control.sock") as clients:
        await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=20)
        fresh = await answers(clients, "/readyz")
        # When more than two intervals pass without another answered heartbeat
        now[0] += 10.5
        stale = await answers(clients, "/readyz")
        alive = await answers(clients, "/healthz")
    # Then it stops being ready (still registered, still alive)
    assert {code for code, _ in fresh.values()} == {200}
    assert {code for code, _ in stale.values()} == {503}
    assert all(body["reason"] == "no heartbeat answered in the last 10s"
               and body["link"] == "registered" for _, body in stale.values())
    assert {code for code, _ in alive.values()} == {200}


async def test_an_engine_that_is_not_running_is_not_alive(make_engine) -> None:
    # Given a metrics listener over an engine that never started (or has finished)
    engine = make_engine("http://127.0.0.1:9")
    server = MetricsServer(engine, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            health, ready = await http.get("/healthz"), await http.get("/readyz")
    finally:
        await server.stop()
    # Then neither check passes
    assert (health.status_code, health.json()["status"]) == (503, "not running")
    assert (ready.status_code, ready.json()["reason"]) == (503, "the engine is not running")


async def test_a_viewer_may_ask_the_read_only_socket_and_a_stranger_may_not(
        devnet: Devnet, make_engine, shared_dir: Path,  # noqa: F811
        test_user: pwd.struct_passwd) -> None:  # noqa: F811
    # Given a miner whose viewers are the test user's group
    own_gid = test_user.pw_gid
    stranger_gid = next(g.gr_gid for g in sorted(grp.getgrall(), key=lambda g: g.gr_gid)
                        if g.gr_gid not in (0, own_gid))
    socket_path = shared_dir / "control.sock"
    engine = make_engine(devnet.url)
    async with hosted(engine, socket_path, ControlAccess(viewer_gid=own_gid)):
        await engine.wait_until(lambda s: s.connection.last_heartbeat_at is not None, timeout=20)
        ro = socket_path.with_name("control.ro.sock")
        # When the viewer asks for health, and a user in no allowed group does too (past
        # the file mode, opened by mistake: the server decides)
        viewer = [await raw(ro, "GET", path, as_user=test_user.pw_name, gid=own_gid)
                  for path in ("/healthz", "/readyz")]
        os.chmod(ro, 0o666)
        stranger = await raw(ro, "GET", "/readyz", as_user=test_user.pw_name, gid=stranger_gid)
    # Then the viewer reads both; the stranger is refused like any other read
    assert [answer["status"] for answer in viewer] == [200, 200]
    assert viewer[1]["body"]["status"] == "ready"
    assert stranger["status"] == 403
