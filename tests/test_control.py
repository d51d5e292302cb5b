"""The control sockets: the engine's snapshot, events and commands, and who may use them."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aitbc_miner.devnet import Devnet
from aitbc_miner.engine import Mode
from aitbc_miner.host.control import ControlAccess, ControlServer, Peer, Role, role_of
from tests.fakes import raw_http
from tests.fakes.receipts import seed_receipts


async def test_control_socket_is_owner_only_and_drives_the_engine(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a running miner with a control socket and a sleeping job on it
    job = await devnet.submit_job({"type": "sleep", "seconds": 30})
    engine = make_engine(devnet.url, cpu=1)
    socket_path = tmp_path / "ctl" / "control.sock"
    server = ControlServer(engine, socket_path)
    await server.start()
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    try:
        # Then only the owner can reach it
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.with_name("control.ro.sock").stat().st_mode) == 0o600
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        async with httpx.AsyncClient(transport=transport, base_url="http://miner") as http:
            # When an operator reads the snapshot and pauses
            snapshot = (await http.get("/snapshot")).json()
            paused = (await http.post("/pause")).json()
            unknown = await http.post("/cancel/no-such-job")
            async with http.stream("GET", "/events") as events:
                # ... and cancels the running job
                canceled = await http.post(f"/cancel/{job['job_id']}")
                first = None
                async for line in events.aiter_lines():
                    if '"job_finished"' in line:
                        first = line
                        break
        # Then each took effect through the engine's commands
        assert snapshot["jobs"][0]["job_id"] == job["job_id"]
        assert snapshot["mode"] == "running" and paused["mode"] == "paused"
        assert engine.snapshot().mode.value == "paused"
        assert unknown.status_code == 404
        assert canceled.status_code == 200
        assert first is not None and '"E_CANCELED"' in first
    finally:
        await server.stop()
    assert not socket_path.exists()


# --- who may do what: peers as the kernel reports them (SO_PEERCRED) --------------------

# A client run as a separate process: the source of tests/fakes/raw_http.py (stdlib only).
RAW_CLIENT = Path(raw_http.__file__).read_text(encoding="utf-8")
PYTHON = os.path.realpath(sys.executable)  # the base interpreter, run with -I
TEST_USER = "aitbc-test"  # created by .ci/run (useradd --system --no-create-home aitbc-test)


async def raw(path: Path, method: str, route: str, *, as_user: str | None = None,
              gid: int | None = None, groups: tuple[int, ...] = ()) -> dict[str, Any]:
    """One request from a separate process, as ``as_user`` (primary group ``gid``, and only
    ``groups`` besides) when given."""
    argv = [PYTHON, "-I", "-c", RAW_CLIENT, str(path), method, route]
    if as_user is not None:
        group_flags = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={gid}", *group_flags, *argv]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    return dict(json.loads(out))


async def _serving_a_job(devnet: Devnet, make_engine, run_engine, socket_path: Path,
                         access: ControlAccess | None = None) -> tuple[Any, ControlServer, str]:
    job = await devnet.submit_job({"type": "sleep", "seconds": 30})
    engine = make_engine(devnet.url, cpu=1)
    server = ControlServer(engine, socket_path, access)
    await server.start()
    run_engine(engine)
    await engine.wait_until(lambda s: s.running == 1, timeout=10)
    return engine, server, job["job_id"]


async def test_commands_sent_by_hand_to_the_read_only_socket_get_403_and_change_nothing(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a running miner holding a job, with its read-only socket beside the command one
    socket_path = tmp_path / "ctl" / "control.sock"
    engine, server, job_id = await _serving_a_job(devnet, make_engine, run_engine, socket_path)
    ro = socket_path.with_name("control.ro.sock")
    try:
        assert stat.S_IMODE(ro.stat().st_mode) == 0o600
        # When a process writes commands by hand to the read-only socket
        answers = [await raw(ro, "POST", route)
                   for route in ("/pause", "/drain", f"/cancel/{job_id}", "/resume")]
        # ... and reads from it
        snapshot = await raw(ro, "GET", "/snapshot")
    finally:
        await server.stop()
    # Then every command is refused with a clear JSON body, and the engine did not move
    for answer in answers:
        assert answer["status"] == 403, answer
        assert answer["body"]["status"] == "forbidden"
        assert "read-only" in answer["body"]["reason"]
    snap = engine.snapshot()
    assert snap.mode is Mode.RUNNING and snap.running == 1 and snap.job(job_id) is not None
    assert snapshot["status"] == 200 and snapshot["body"]["jobs"][0]["job_id"] == job_id
    assert not ro.exists()


def _other_group(*taken: int) -> grp.struct_group:
    return next(g for g in sorted(grp.getgrall(), key=lambda g: g.gr_gid)
                if g.gr_gid not in (0, *taken))


@pytest.fixture
def test_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test runs clients as another user")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a client as another user")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pytest.skip(f"no user {TEST_USER!r}: useradd --system --no-create-home {TEST_USER}")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A socket folder another user can reach (pytest's tmp_path is closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="aitbc-ctl-"))  # in /tmp; the server opens it 0711
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_a_peer_outside_the_operator_group_may_watch_but_not_command(
        devnet: Devnet, make_engine, run_engine, shared_dir: Path,
        test_user: pwd.struct_passwd) -> None:
    # Given a miner whose viewers are the test user's group, and whose operators are another
    user, own_gid = test_user.pw_name, test_user.pw_gid
    operators = _other_group(own_gid)
    outsiders = _other_group(own_gid, operators.gr_gid)
    access = ControlAccess(operator_gid=operators.gr_gid, viewer_gid=own_gid)
    socket_path = shared_dir / "control.sock"
    ro = socket_path.with_name("control.ro.sock")
    engine, server, job_id = await _serving_a_job(
        devnet, make_engine, run_engine, socket_path, access)
    try:
        assert stat.S_IMODE(shared_dir.stat().st_mode) == 0o711
        assert (socket_path.stat().st_gid, ro.stat().st_gid) == (operators.gr_gid, own_gid)
        assert {stat.S_IMODE(p.stat().st_mode) for p in (socket_path, ro)} == {0o660}
        # When the viewer (no operator group) tries both sockets
        as_viewer = {"as_user": user, "gid": own_gid}
        closed = await raw(socket_path, "POST", "/pause", **as_viewer)
        watched = await raw(ro, "GET", "/snapshot", **as_viewer)
        refused_ro = await raw(ro, "POST", "/pause", **as_viewer)
        # ... and the command socket's file mode is opened to everyone by mistake
        os.chmod(socket_path, 0o666)
        refused = await raw(socket_path, "POST", f"/cancel/{job_id}", **as_viewer)
        stranger = await raw(socket_path, "GET", "/snapshot", as_user=user,
                             gid=outsiders.gr_gid)
        unmoved = engine.snapshot()
        # ... and the same user, now holding the operator group, pauses
        paused = await raw(socket_path, "POST", "/pause", **as_viewer,
                           groups=(operators.gr_gid,))
    finally:
        await server.stop()
    # Then file modes kept the viewer off the command socket; the server refused its
    # commands anyway, and any request from a user in neither group
    assert closed == {"error": "EACCES"}
    assert watched["status"] == 200 and watched["body"]["jobs"][0]["job_id"] == job_id
    assert refused_ro["status"] == refused["status"] == 403, (refused_ro, refused)
    assert stranger["status"] == 403 and "may not use" in stranger["body"]["reason"]
    assert unmoved.mode is Mode.RUNNING and unmoved.job(job_id) is not None
    # ... while a member of the operator group (a supplementary group) may command
    assert paused["status"] == 200 and paused["body"]["mode"] == "paused"
    assert engine.snapshot().mode is Mode.PAUSED


def test_a_peer_is_an_operator_by_uid_or_group_and_never_more_on_the_read_only_socket() -> None:
    access = ControlAccess(operator_gid=500, viewer_gid=600)
    me, other = os.geteuid(), os.geteuid() + 12345

    def role(uid: int, gid: int, groups: tuple[int, ...] = (), ro: bool = False) -> Role:
        return role_of(Peer(1, uid, gid, frozenset(groups)), access, read_only_socket=ro)

    assert role(me, 1) is Role.OPERATOR and role(0, 1) is Role.OPERATOR
    assert role(other, 500) is Role.OPERATOR and role(other, 1, (7, 500)) is Role.OPERATOR
    assert role(other, 600) is Role.VIEWER and role(other, 1, (600,)) is Role.VIEWER
    assert role(other, 1, (2, 3)) is Role.NONE
    assert role(me, 1, ro=True) is Role.VIEWER and role(other, 1, ro=True) is Role.NONE
    assert role(other, 1, ro=False) is Role.NONE
    assert role_of(Peer(1, other, 500, frozenset()), ControlAccess(), read_only_socket=False) \
        is Role.NONE


# --- what viewers receive: snapshots without receipts, receipts a page at a time --------


async def test_snapshots_leave_receipts_out_and_receipts_come_a_page_at_a_time(
        devnet: Devnet, make_engine, run_engine, tmp_path: Path) -> None:
    # Given a running miner holding 25 receipts (ids r00000 oldest ... r00024 newest)
    ids = await seed_receipts(tmp_path / "miner" / "journal.sqlite3", 25, prefix="t")
    newest_first = ids[::-1]
    engine = make_engine(devnet.url, cpu=1)
    server = ControlServer(engine, tmp_path / "ctl" / "control.sock")
    await server.start()
    run_engine(engine)
    await engine.wait_until(lambda s: s.counters.receipts == 25, timeout=10)
    transport = httpx.AsyncHTTPTransport(uds=str(server.read_only_path))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://miner") as http:
            async def page(**params: Any) -> tuple[int, Any]:
                answer = await http.get("/receipts", params=params)
                return answer.status_code, answer.json()

            plain = (await http.get("/snapshot")).json()
            head = (await http.get("/snapshot", params={"receipts": 3})).json()
            async with http.stream("GET", "/snapshots") as stream:
                first_line = await anext(stream.aiter_lines())
            newest = await page(limit=10)
            older = await page(limit=10, before=newest_first[9])
            last = await page(limit=10, before=newest_first[19])
            since = await page(limit=10, after=newest_first[4])
            gap = await page(limit=2, after=newest_first[4])
            unknown = await page(before="no-such-receipt")
            bad = await page(limit="many")
    finally:
        await server.stop()
    # Then snapshots carry no receipt list unless asked, only the count
    assert plain["receipts"] == [] and plain["counters"]["receipts"] == 25
    assert json.loads(first_line)["receipts"] == []
    assert [r["receipt_id"] for r in head["receipts"]] == newest_first[:3]
    # and pages walk the receipts newest first, saying whether more lie beyond
    ids_of = [[r["receipt_id"] for r in p[1]["items"]] for p in (newest, older, last, since, gap)]
    assert ids_of[0] == newest_first[:10] and newest[1]["more"] is True
    assert ids_of[1] == newest_first[10:20] and older[1]["more"] is True
    assert ids_of[2] == newest_first[20:] and last[1]["more"] is False
    assert ids_of[3] == newest_first[:4] and since[1]["more"] is False  # what came after
    assert ids_of[4] == newest_first[:2] and gap[1]["more"] is True  # more than a page came
    assert unknown[0] == 404 and bad[0] == 400
