"""How a job is kept apart from the agent and from other jobs: bubblewrap, and who it runs as.

``Isolation.BWRAP`` (the default) runs every process job under bubblewrap (``bwrap``, the
sandbox Flatpak is built on) with fresh user, PID, mount, IPC, UTS and cgroup namespaces,
and a network namespace unless its policy allows the network. What the job sees is
exactly what ``bwrap_args`` lists: the system's program and library folders and a few
files of ``/etc``, read-only; its workspace, a size-capped tmpfs that is also its
``/tmp``; its own ``/proc`` and a minimal ``/dev`` (plus, for a GPU job, its own GPU's
device nodes); its secrets in ``/run/secrets``; and the paths its runner opened for it,
bound by descriptor so the file that was checked is the file that runs. The agent's
state dir, key, journal, config, control socket, other workspaces and the host's
``/proc`` are simply not there.

``Isolation.NONE`` is an operator's explicit opt-out (``runners.isolation: none``): jobs
run beside the agent with only a network namespace and limits. It is announced on every
screen and at the start of every log.

An agent running as root never runs a job as root: each job gets the dedicated
unprivileged ``runners.job_user`` before anything of the job's starts (``bwrap --uid``
alone would still be root on the host). An unprivileged agent's jobs keep its uid outside
their user namespace; for them the boundary is that nothing of the agent's is visible.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .launch import system_args
from .limits import MIB, NetworkPolicy

SECRETS_MOUNT = "/run/secrets"  # where a job finds its secrets (AITBC_SECRETS_DIR)
# The few files of /etc a program commonly needs: the loader cache, name service, TLS
# roots, time zone. Never shadow, sudoers, ssh keys or the miner's own config.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl",
             "ca-certificates", "ca-certificates.conf", "resolv.conf", "hosts", "host.conf",
             "nsswitch.conf", "gai.conf", "localtime", "timezone", "protocols", "services",
             "mime.types", "passwd", "group", "os-release")
GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SHM_MB = 64  # /dev/shm of a job


class Isolation(StrEnum):
    BWRAP = "bwrap"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class JobUser:
    """The unprivileged account a root agent's jobs run as."""

    name: str
    uid: int
    gid: int


def job_user(name: str) -> JobUser | None:
    """The account named ``name`` if it exists and is not root; None otherwise."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        return None
    return JobUser(name, entry.pw_uid, entry.pw_gid)


def find_bwrap() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def gpu_nodes(gpu_index: str | None, dev: Path = Path("/dev")) -> list[Path]:
    """The device nodes one GPU slot needs: its own card (the parent's, for a MIG
    instance) and the driver's control nodes. Never another GPU's."""
    if gpu_index is None:
        return []
    card = gpu_index.partition(":")[0]
    names = ([f"nvidia{card}"] if card.isdigit() else []) + list(GPU_CONTROL_NODES)
    return [dev / name for name in names]


def bwrap_args(*, work: Path, network: NetworkPolicy, ro_paths: Iterable[Path] = (),
               ro_files: Mapping[str, Path] = {}, executable: Path | None = None,
               secrets: bool = False, gpu_devices: Iterable[Path] = ()) -> tuple[list[str],
                                                                                 list[str]]:
    """bubblewrap's options for one job, and the paths the launcher must open for it.

    ``{fd:NAME}`` marks a descriptor the launcher supplies: ``work``/``tmp`` (the job's
    tmpfs), ``secrets``, ``exe`` (the checked executable) and ``openN`` (the Nth of the
    returned paths, opened before anything is mounted).
    """
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "aitbc-job"]
    if network is NetworkPolicy.HOST:
        args.append("--share-net")
    args += system_args()
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(SHM_MB * MIB), "--tmpfs", "/dev/shm"]
    for node in gpu_devices:
        args += ["--dev-bind-try", str(node), f"/dev/{node.name}"]
    # /tmp before the binds below: in tests (and under PrivateTmp) they lie below /tmp.
    args += ["--bind-fd", "{fd:tmp}", "/tmp"]
    opened: list[str] = []
    for path in ro_paths:
        args += ["--ro-bind-fd", f"{{fd:open{len(opened)}}}", str(path)]
        opened.append(str(path))
    for dest, source in ro_files.items():
        args += ["--ro-bind-fd", f"{{fd:open{len(opened)}}}", dest]
        opened.append(str(source))
    if executable is not None:
        args += ["--ro-bind-fd", "{fd:exe}", str(executable)]
    args += ["--bind-fd", "{fd:work}", str(work)]
    if secrets:
        args += ["--ro-bind-fd", "{fd:secrets}", SECRETS_MOUNT]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", str(work)]
    return args, opened


def interpreter_paths(python: str) -> list[Path]:
    """What a job needs to run ``python``: its installation prefix when outside /usr."""
    real = Path(os.path.realpath(python))
    prefix = real.parent.parent
    return [] if prefix == Path("/usr") or Path("/usr") in prefix.parents else [prefix]
