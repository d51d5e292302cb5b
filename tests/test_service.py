"""The systemd service: the unit's options, systemd's own verdict on it, what
``deploy/install.sh`` leaves behind, and a job sandbox under the unit's file-system options.

systemd is not PID 1 on CI, so the unit cannot be started here: ``systemd-analyze``
checks the file offline, and the unit's mount options are emulated (a private mount
namespace: everything read-only but the state dir, a private /tmp, no /home, /proc with
hidepid) around a real job, run by an unprivileged agent with no new privileges and no
capabilities, as the unit runs it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aitbc_miner import __version__
from aitbc_miner.config import load_settings
from aitbc_miner.host.cli import SERVICE_SOCKET
from tests.runners.helpers import behave, features_or_skip
from tests.unprivileged import SYSTEM_PYTHON, as_user

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "aitbc-miner.service"
INSTALL = ROOT / "deploy" / "install.sh"
PREFIX = Path("/opt/aitbc-miner")
ETC = Path("/etc/aitbc-miner")
ONE_JOB = ROOT / "tests" / "fixtures_runners" / "one_job.py"
MAX_EXPOSURE = 4.0  # `systemd-analyze security`: 3.6 when this was written ("OK")
#: Options that break the job sandbox (docs/service.md says how) or hide the GPUs.
FORBIDDEN = ("RestrictNamespaces", "PrivateUsers", "ProtectKernelTunables", "ProtectKernelLogs",
             "ProcSubset", "ProtectHostname", "ProtectControlGroups", "MemoryDenyWriteExecute",
             "PrivateDevices", "ProtectClock", "DevicePolicy", "DeviceAllow")


def unit_options(path: Path = UNIT) -> dict[str, list[str]]:
    """``Section.Key`` -> every value it is given, in order (keys may repeat)."""
    options: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        options.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return options


def one(options: dict[str, list[str]], key: str) -> str:
    values = options.get(f"Service.{key}", [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def environment(options: dict[str, list[str]]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in options.get("Service.Environment", []))


def test_the_unit_has_the_options_the_service_relies_on() -> None:
    o = unit_options()
    # systemd hears from the miner itself, and reloads it with SIGHUP
    assert one(o, "Type") == "notify" and one(o, "NotifyAccess") == "main"
    assert one(o, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(o, "ExecStart").startswith(f"{PREFIX}/bin/aitbc-miner --headless --config "
                                          f"{ETC}/config.yaml")
    assert one(o, "User") == "aitbc-miner" and one(o, "LoadCredential") == (
        f"miner-key:{ETC}/miner.key")
    assert one(o, "PrivateTmp") == "yes" and one(o, "Delegate") == "yes"
    assert one(o, "ProtectSystem") == "strict" and one(o, "NoNewPrivileges") == "yes"
    # the folders it writes are systemd's, and the miner is pointed at them
    env = environment(o)
    state = Path("/var/lib") / one(o, "StateDirectory")
    assert Path(env["AITBC_MINER_PATHS__STATE_DIR"]).parent == state
    assert Path(env["AITBC_MINER_PATHS__DATA_DIR"]).parent == state
    runtime = Path("/run") / one(o, "RuntimeDirectory")
    assert env["AITBC_MINER_CONTROL__SOCKET_DIR"] == str(runtime) == str(SERVICE_SOCKET.parent)
    assert one(o, "RuntimeDirectoryMode") == "0711"  # viewers pass through to their socket
    assert env["AITBC_MINER_CONTROL__VIEWER_GROUP"] == "aitbc-miner"
    assert one(o, "ConfigurationDirectory") == ETC.name
    # a drain gets its grace before systemd kills; a start does not hang forever
    drain = load_settings(None, env={}).jobs.drain_grace_s
    assert int(one(o, "TimeoutStopSec")) > drain
    assert 0 < int(one(o, "TimeoutStartSec")) <= 120
    assert one(o, "RestartPreventExitStatus").split() == ["2", "3"]
    # and nothing that breaks the sandbox's namespaces or hides the GPUs
    assert not [k for k in FORBIDDEN if f"Service.{k}" in o]


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is missing (.ci/run installs the systemd package)")
    return exe


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    exe = _analyze()
    unit = UNIT
    start = one(unit_options(), "ExecStart").split()[0]
    if not Path(start).exists():  # not installed here: verify it against a stand-in program
        stub = tmp_path / "aitbc-miner"
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        unit = tmp_path / UNIT.name
        unit.write_text(UNIT.read_text(encoding="utf-8").replace(start, str(stub)))
    proc = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    # verify exits 0 on unknown keys too, with a warning: an empty stderr is the verdict
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_systemd_analyze_security_rates_the_unit_ok() -> None:
    exe = _analyze()
    proc = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    if found is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit offline: {proc.stderr.strip()}")
    assert float(found.group(1)) <= MAX_EXPOSURE, proc.stdout


# --- what install.sh leaves ----------------------------------------------------------


def _installed() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (deploy/install.sh runs as root)")
    if not (PREFIX / "bin" / "aitbc-miner").exists():
        pytest.skip(f"not installed here: run `{INSTALL.relative_to(ROOT)} --no-systemd` "
                    "(.ci/run does)")


def _mode(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(
        st.st_gid).gr_name


def test_install_leaves_users_folders_modes_and_a_working_program() -> None:
    _installed()
    # the service's user and group, and the job user, none of them able to log in
    service = pwd.getpwnam("aitbc-miner")
    assert grp.getgrgid(service.pw_gid).gr_name == "aitbc-miner"
    for user in (service, pwd.getpwnam("aitbc-job")):
        assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000
    # configuration: root's, readable by the service's group only
    assert _mode(ETC) == (0o750, "root", "aitbc-miner")
    assert _mode(ETC / "allowlist.d") == (0o750, "root", "aitbc-miner")
    assert _mode(ETC / "config.yaml") == (0o640, "root", "aitbc-miner")
    if (ETC / "miner.key").exists():
        assert _mode(ETC / "miner.key") == (0o600, "root", "root")
    # the program: root's, nobody else may change it, the unit is the repository's
    for path in (PREFIX, PREFIX / "bin", PREFIX / "bin" / "aitbc-miner"):
        mode, owner, _ = _mode(path)
        assert owner == "root" and not mode & 0o022, path
    assert Path("/etc/systemd/system/aitbc-miner.service").read_text() == UNIT.read_text()
    # and the service's user can run it and read the installed config, with the unit's
    # environment
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **environment(unit_options())}
    argv = ["setpriv", "--reuid=aitbc-miner", "--regid=aitbc-miner", "--init-groups",
            f"{PREFIX}/bin/aitbc-miner", "--config", f"{ETC}/config.yaml"]
    version = subprocess.run([*argv, "--version"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert version.stdout.strip() == f"aitbc-miner {__version__}", version.stderr
    check = subprocess.run([*argv, "config", "check"], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    shown = yaml.safe_load(check.stdout)
    assert shown["control"]["socket_dir"] == str(SERVICE_SOCKET.parent)
    assert shown["runners"]["allowlist_dirs"][0] == f"{ETC}/allowlist.d"


# --- a job under the unit's file-system options --------------------------------------

# ProtectSystem=strict with StateDirectory= writable, PrivateTmp=, ProtectHome=,
# ProtectProc=invisible; $1 is the folder that plays the state dir (seen as /mnt), $2 the
# checkout (kept visible wherever it is, as BindReadOnlyPaths= would); then the command.
EMULATE_UNIT = r"""
set -eu
state="$1"; repo="$2"; shift 2
mount --bind "$state" /mnt
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
mount -o remount,bind,rw /mnt
if [ -w / ] || [ -w /usr ] || [ -w /etc ]; then echo "emulation: / stays writable" >&2; exit 3; fi
mkdir -p /mnt/.checkout && mount --rbind "$repo" /mnt/.checkout
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mkdir -p "$repo" 2>/dev/null && mount --rbind /mnt/.checkout "$repo"  # a checkout in /tmp
for d in /home /root /run/user; do
  case "$repo/" in "$d"/*) continue ;; esac
  [ -d "$d" ] && mount -t tmpfs -o ro,mode=000 tmpfs "$d"
done
mount -t proc -o hidepid=invisible proc /proc
exec "$@"
"""


def test_a_network_none_job_runs_under_the_units_file_system_options(tmp_path: Path) -> None:
    features_or_skip(netns=True)
    prefix, env, account = as_user()
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    # Given a state dir with an allowlist entry that probes the host's loopback, and a
    # server listening there
    state = tmp_path / "state"
    (state / "allowlist.d").mkdir(parents=True)
    (state / "jobs").mkdir()
    os.chown(state / "jobs", account.pw_uid, account.pw_gid)
    state.chmod(0o755)
    args = {"max_count": 2, "rules": [{"type": "enum", "choices": ["127.0.0.1"]},
                                      {"type": "int", "min": 1, "max": 65535}]}
    (state / "allowlist.d" / "probe.yaml").write_text(yaml.safe_dump(
        {"commands": {"probe": behave("net", args=args, network="none")}}))
    server = socket.create_server(("127.0.0.1", 0))
    port = str(server.getsockname()[1])
    # When the job runs in that world, started by an agent without privileges to gain
    agent = [prefix[0], "--no-new-privs", "--bounding-set=-all", *prefix[1:-1], SYSTEM_PYTHON]
    try:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", EMULATE_UNIT, "-",
             str(state), str(ROOT), *agent, str(ONE_JOB), "/mnt/allowlist.d", "/mnt/jobs",
             "probe", "127.0.0.1", port],
            env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    # Then the sandbox was built and ran it, and it found only its own loopback
    assert "result" in outcome, outcome
    assert json.loads(outcome["result"]["stdout"]) == {"connected": False,
                                                       "error": "ConnectionRefusedError"}


# --- finding the service's socket -----------------------------------------------------


def test_status_finds_the_configured_socket_then_the_services_then_the_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aitbc_miner.host import cli

    def listening(path: Path) -> socket.socket:
        path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        return sock

    def config(text: str) -> Any:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return load_settings(path, env={})

    service = tmp_path / "run" / "control.sock"
    monkeypatch.setattr(cli, "SERVICE_SOCKET", service)
    status = cli.build_parser().parse_args(["status"])
    ctl = cli.build_parser().parse_args(["ctl", "status"])
    plain = config("")  # names no folder: the per-user state dir is the last resort
    named = config(f"paths:\n  state_dir: {tmp_path / 'state'}\n")
    own = tmp_path / "state" / "control.sock"
    # Nothing listens: the configured socket is named (and the error will say so)
    assert cli.socket_for(status, named) == own.with_name("control.ro.sock")
    # The service listens: found by a config that names no folder, not by one that does
    sockets = [listening(service), listening(service.with_name("control.ro.sock"))]
    try:
        assert cli.socket_for(ctl, plain) == service
        assert cli.socket_for(status, plain) == service.with_name("control.ro.sock")
        assert cli.socket_for(ctl, named) == service  # nothing at the configured one yet
        sockets.append(listening(own))
        assert cli.socket_for(ctl, named) == own
        # --socket wins over all of them, without reading the config
        flagged = cli.build_parser().parse_args(["status", "--socket", str(tmp_path / "x")])
        assert cli.socket_for(flagged) == tmp_path / "x"
    finally:
        for sock in sockets:
            sock.close()
