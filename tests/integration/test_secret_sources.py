"""The miner key out of the environment, for real: a headless ``aitbc-miner`` against the
reference coordinator, its key from a systemd-style credentials directory, from
``AITBC_MINER_MINER__KEY``, or from a data object in a SoftHSM2 token.

The proof is read where an attacker would read it: ``/proc/<agent>/environ``, and inside
jobs of each process type (``cli``, ``python``), which dump every environment they can see
(their own, PID 1's, their parent's, the agent's) hex-encoded, so no redaction on the way
out could hide a leak. Inference jobs start no process (the agent calls the backend over
HTTP); tests/secret_sources/test_spawn_sites.py holds every process start to an explicit
environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.runners.helpers import sandbox_or_skip
from tests.secret_sources.softhsm import softhsm_token
from tests.unprivileged import as_user, give

from .conftest import MINER_EXE, TERMINAL, MinerLauncher, Proc, event_is
from .test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.timeout(180)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures_runners"
ENVDUMP = str(FIXTURES / "envdump.py")
JOB_PYTHON = os.path.realpath("/usr/bin/python3")  # one the job user can run
ANY_TEXT = {"max_count": 1, "rules": [{"type": "string", "pattern": "[ -~]*",
                                       "max_length": 4096}]}


@pytest.fixture
def creds() -> Iterator[Path]:
    """A credentials directory as systemd makes one: on tmpfs, private, 0400 files."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm tmpfs on this host")
    folder = Path(tempfile.mkdtemp(prefix="aitbc-test-creds-", dir="/dev/shm"))
    yield folder
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()


def _credential(folder: Path, name: str, value: str) -> None:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o400)


def _config(root: Path, miner: dict[str, Any], secret: dict[str, Any],
            identity: dict[str, Any] | None = None) -> Path:
    allow = root / "allowlist.d"
    allow.mkdir(mode=0o755)
    (allow / "envdump.yaml").write_text(yaml.safe_dump({"commands": {"envdump": {
        "executable": JOB_PYTHON, "fixed_args": ["-I", ENVDUMP], "read_only": [ENVDUMP],
        "args": ANY_TEXT, "network": "none", "secrets": ["jobtok"]}}}))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "miner": miner,
        **({"identity": identity} if identity else {}),
        "runners": {
            "allowlist_dirs": [str(allow)],
            "secrets": {"jobtok": secret},
            "python": {"executable": JOB_PYTHON, "paths": [str(FIXTURES)], "functions": [
                {"target": "envdump:dump", "network": "none", "secrets": ["jobtok"]}]}}}))
    config.chmod(0o600)
    return config


def _start(miner: MinerLauncher, devnet: Any, config: Path, extra_env: dict[str, str],
           **settings: str | None) -> Proc:
    env = miner.env(devnet, **settings)  # type: ignore[arg-type]
    env.update(extra_env)
    proc = Proc([str(MINER_EXE), "--headless", "--config", str(config)], env=env,
                cwd=miner.root, name="miner")
    miner._procs.append(proc)
    return proc


def _environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _blobs(report: dict[str, Any]) -> dict[str, bytes]:
    """Every environment a job saw, decoded (unreadable ones say so, in text)."""
    found = {k: report[k] for k in ("os_environ", "self", "pid1", "parent", "agent")}
    found.update({f"pid {pid}": blob for pid, blob in report["others"].items()})
    return {k: bytes.fromhex(v) if not v.startswith("unreadable") else v.encode()
            for k, v in found.items()}


def _run_jobs(devnet: Any, agent_pid: int) -> dict[str, dict[str, Any]]:
    """One job of each process type; their reports, by type."""
    payload = {"agent_pid": agent_pid}
    jobs = {"cli": devnet.submit({"type": "cli", "command": "envdump",
                                  "args": [json.dumps(payload)]}),
            "python": devnet.submit({"type": "python", "function": "envdump:dump", **payload})}
    devnet.poll_until(lambda _s: all(devnet.job(j)["state"] in TERMINAL for j in jobs.values()),
                      timeout=90, what="the envdump jobs ended")
    reports = {}
    for kind, job_id in jobs.items():
        job = devnet.job(job_id)
        assert job["state"] == "COMPLETED", (kind, job)
        answer = devnet.http.get(f"/v1/jobs/{job_id}/result",
                                 headers=devnet.ready["client_headers"]).json()["result"]
        reports[kind] = (json.loads(answer["stdout"].splitlines()[-1]) if kind == "cli"
                         else answer["output"])
    return reports


def _assert_no_job_saw(reports: dict[str, dict[str, Any]], *secrets: str,
                       job_secret: str) -> None:
    for kind, report in reports.items():
        blobs = _blobs(report)
        # The dump works: the job's own environment is there, with its id
        assert b"AITBC_JOB_ID=" in blobs["self"], kind
        for where, blob in blobs.items():
            for secret in secrets:
                assert secret.encode() not in blob, (kind, where)
            assert b"AITBC_MINER_" not in blob, (kind, where)
            assert job_secret.encode() not in blob, (kind, where)  # a file, never a variable
        # and its secret came as a file, from where the config said
        assert report["secrets"] == {
            "jobtok": hashlib.sha256(job_secret.encode() + b"\n").hexdigest()}, kind


@pytest.mark.parametrize("given", ["credential", "environment"])
def test_the_key_is_in_no_environment_of_the_agent_or_its_jobs(
        given: str, start_devnet: Any, miner: MinerLauncher, creds: Path) -> None:
    sandbox_or_skip()
    key, job_secret = f"mk-{uuid.uuid4().hex}", f"jt-{uuid.uuid4().hex}"
    pin = f"pin-{uuid.uuid4().hex}"
    devnet = start_devnet("2026-08", miner_keys=(key,))
    # Given the key in a credentials directory (or in the environment, with a token PIN
    # in the variable identity.token.pin_env names), and a job secret as a credential
    _credential(creds, "job-token", job_secret)
    extra_env = {"CREDENTIALS_DIRECTORY": str(creds)}  # as a service has it
    identity = None
    if given == "credential":
        _credential(creds, "miner-key", key)
    else:
        extra_env["RIG_TOKEN_PIN"] = pin
        identity = {"token": {"pin_env": "RIG_TOKEN_PIN"}}
    miner_cfg = {"key_source": {"credential": "miner-key"}} if given == "credential" else {}
    config = _config(miner.root, miner_cfg, {"credential": "job-token"}, identity)
    # When the agent starts
    proc = _start(miner, devnet, config, extra_env,
                  MINER__KEY=key if given == "environment" else None, SLOTS__CPU="2")
    proc.wait_for(event_is("registered"), timeout=60)  # so the coordinator took the key
    # Then its environment block (as /proc shows it to root, or to its own user) lacks the
    # key, the PIN and every settings variable, though it is the process the test started
    block = _environ_of(proc.pid)
    assert key.encode() not in block and pin.encode() not in block
    for name in (b"AITBC_MINER_MINER__KEY", b"AITBC_MINER_SLOTS__CPU", b"RIG_TOKEN_PIN"):
        assert name not in block
    assert f"CREDENTIALS_DIRECTORY={creds}".encode() in block
    # and it said which variables it took out (names only)
    (cleared,) = proc.wait_for(event_is("environment_cleared"))
    assert "AITBC_MINER_SLOTS__CPU" in cleared["variables"]
    assert ("RIG_TOKEN_PIN" in cleared["variables"]) == (given == "environment")
    # And no job of any process type sees them, nor the agent's settings, nor its own
    # secret in a variable
    reports = _run_jobs(devnet, proc.pid)
    _assert_no_job_saw(reports, key, pin, job_secret=job_secret)
    # And a reload still reads the settings the environment gave (nothing changed)
    mark = proc.mark()
    proc.send(signal.SIGHUP)
    (reloaded,) = proc.wait_for(event_is("config_reloaded"), after=mark)
    assert (reloaded["applied"], reloaded["need_restart"]) == ([], []), reloaded
    assert key not in proc.text() and job_secret not in proc.text()


@pytest.mark.parametrize("pin_via", ["credential", "environment"])
def test_the_key_and_a_job_secret_come_from_a_softhsm2_token(
        pin_via: str, start_devnet: Any, miner: MinerLauncher, creds: Path,
        tmp_path: Path) -> None:
    sandbox_or_skip()
    key, job_secret = f"mk-{uuid.uuid4().hex}", f"jt-{uuid.uuid4().hex}"
    pin = f"p{uuid.uuid4().hex[:12]}"
    devnet = start_devnet("2026-01", miner_keys=(key,))
    # Given a token holding the miner key and a job secret as data objects, its PIN in a
    # credential file or in the variable identity.token.pin_env names
    token = softhsm_token(tmp_path, "aitbc-rig", pin, {"miner-key": key.encode(),
                                                       "job-seed": job_secret.encode() + b"\n"})
    env = token.env()
    identity: dict[str, Any] = {"module": str(token.module), "token_label": token.label}
    if pin_via == "credential":
        pin_file = creds / "token-pin"
        pin_file.write_text(pin)
        pin_file.chmod(0o600)
        identity["pin_file"] = str(pin_file)
    else:
        env["RIG_PIN"] = pin
        identity["pin_env"] = "RIG_PIN"
    config = _config(miner.root, {"key_source": {"token_object": "miner-key"}},
                     {"token_object": "job-seed"}, {"token": identity})
    _make_rig_key(miner, config, env)
    # When the agent starts with the key source set to the token object
    proc = _start(miner, devnet, config, env, MINER__KEY=None)
    # Then the coordinator accepts the key read from the token
    proc.wait_for(event_is("registered"), timeout=60)
    block = _environ_of(proc.pid)
    assert key.encode() not in block and pin.encode() not in block
    assert b"RIG_PIN" not in block
    # And jobs get the token's job secret as a file, and see neither secret elsewhere
    _assert_no_job_saw(_run_jobs(devnet, proc.pid), key, pin, job_secret=job_secret)
    assert key not in proc.text() and pin not in proc.text()


def _make_rig_key(miner: MinerLauncher, config: Path, env: dict[str, str]) -> None:
    """The rig's signing key, made inside the token (the identity commands' job)."""
    done = subprocess.run([str(MINER_EXE), "key", "generate", "--config", str(config)],
                          env={**miner.env(None, MINER__KEY=None), **env},  # type: ignore[arg-type]
                          cwd=miner.root, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr


# --- bad sources: one line, exit 2 ------------------------------------------------------


def test_a_missing_credential_exits_2_with_one_line(miner: MinerLauncher, creds: Path) -> None:
    result = run_cli(miner, "--headless", MINER__KEY=None,  # type: ignore[arg-type]
                     MINER__KEY_SOURCE__CREDENTIAL="miner-key")
    assert_one_line_error(result, "miner.key_source: E_SECRET_NOT_FOUND",
                          "$CREDENTIALS_DIRECTORY is not set")


@pytest.mark.parametrize("mode, where, code", [
    (0o644, "shm", "E_SECRET_EXPOSED"), (0o600, "disk", "E_SECRET_ON_DISK")])
def test_a_key_file_others_can_read_or_on_disk_exits_2_with_one_line(
        miner: MinerLauncher, creds: Path, mode: int, where: str, code: str) -> None:
    key = f"mk-{uuid.uuid4().hex}"
    path = (creds if where == "shm" else miner.root) / "miner.key"
    path.write_text(key)
    path.chmod(mode)
    result = run_cli(miner, "--headless", MINER__KEY=None,  # type: ignore[arg-type]
                     MINER__KEY_SOURCE__FILE=str(path))
    if where == "disk" and "E_SECRET_ON_DISK" not in result.stderr:
        pytest.skip(f"{miner.root} is itself in memory here: {result.stderr.strip()}")
    assert_one_line_error(result, f"miner.key_source: {code}", str(path))
    assert key not in result.stderr + result.stdout


@pytest.mark.parametrize("pin, words", [
    ("135790", ("E_SECRET_NOT_FOUND", "no data objects labelled 'miner-key'")),
    ("999999", ("E_SECRET_TOKEN", "refused the PIN"))])
def test_a_token_without_the_object_or_with_a_wrong_pin_exits_2_with_one_line(
        miner: MinerLauncher, creds: Path, tmp_path: Path, pin: str,
        words: tuple[str, str]) -> None:
    token = softhsm_token(tmp_path, "aitbc-rig", "135790", {"other": b"x"})
    pin_file = creds / "token-pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    result = subprocess.run(
        [str(MINER_EXE), "--headless"], cwd=miner.root, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL, check=False,
        env={**miner.env(None, MINER__KEY=None,  # type: ignore[arg-type]
                         MINER__KEY_SOURCE__TOKEN_OBJECT="miner-key",
                         IDENTITY__TOKEN__MODULE=str(token.module),
                         IDENTITY__TOKEN__TOKEN_LABEL=token.label,
                         IDENTITY__TOKEN__PIN_FILE=str(pin_file)), **token.env()})
    assert_one_line_error(result, f"miner.key_source: {words[0]}", words[1])
    assert pin not in result.stderr


PROBE = """
import json, sys
seen = {}
for name in ("environ", "mem", "cmdline"):
    try:
        with open(f"/proc/{sys.argv[1]}/{name}", "rb") as fh:
            fh.read(1)
        seen[name] = "read"
    except OSError as exc:
        seen[name] = type(exc).__name__
print(json.dumps(seen))
"""


def test_a_process_of_the_agents_own_user_cannot_read_its_memory(miner: MinerLauncher) -> None:
    # Given an agent running as an unprivileged user (its coordinator down: it retries)
    prefix, _, account = as_user()
    give(miner.root, account)
    proc = miner.start(None, argv=[*prefix, "-m", "aitbc_miner", "--headless"],
                       MINER__KEY=f"mk-{uuid.uuid4().hex}",
                       COORDINATOR__URL="http://127.0.0.1:9",  # nothing listens there
                       RUNNERS__ALLOWLIST_DIRS="[]")
    proc.wait_for(event_is("backing_off"), timeout=60)
    # When another process of that same user tries to read the agent's memory and /proc
    done = subprocess.run([*prefix, "-c", PROBE, str(proc.pid)], capture_output=True,
                          text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    # Then the kernel refuses (the agent is not dumpable: no core dump either), though
    # the world-readable command line still reads
    assert json.loads(done.stdout) == {"environ": "PermissionError", "mem": "PermissionError",
                                       "cmdline": "read"}
