"""What isolation this host gives a job, found once per agent process.

The probe runs the real launcher (``launch.py --probe``) in a throw-away child, so what
it reports is what a job would get: a network namespace (as root, or through a user
namespace when unprivileged user namespaces are allowed), a private tmpfs for secrets,
and a writable cgroup hierarchy. Runners refuse a ``network: none`` job when ``netns`` is
False instead of running it with the host's network.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cgroups import CgroupHost, CgroupMode, detect
from .isolation import JobUser

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("launch.py")
#: The launcher's whole environment: nothing of the agent's (its key, a PIN) reaches it.
LAUNCHER_ENV = {"PATH": "/usr/bin:/bin"}
PROBE_TIMEOUT_S = 20.0  # a probe that hangs longer means "no isolation", never a stuck agent


@dataclass(frozen=True, slots=True)
class SandboxFeatures:
    """The host's answer; build one by hand in tests to play a host without isolation."""

    netns: bool
    private_tmpfs: bool
    cgroups: CgroupHost = field(default_factory=lambda: CgroupHost(CgroupMode.NONE))
    netns_how: str = "none"
    notes: tuple[str, ...] = ()
    bwrap: bool = False  # bubblewrap starts a sandbox here, as the user jobs run as
    bwrap_error: str | None = "not probed"

    def describe(self) -> str:
        box = "bubblewrap" if self.bwrap else f"no bubblewrap ({self.bwrap_error})"
        net = f"network namespace ({self.netns_how})" if self.netns else "no network namespace"
        tmpfs = "private tmpfs" if self.private_tmpfs else "secrets in /dev/shm"
        groups = (f"cgroup {self.cgroups.mode.value}" if self.cgroups.mode is not CgroupMode.NONE
                  else f"rlimits only ({self.cgroups.reason})")
        return f"{box}, {net}, {tmpfs}, {groups}"


def probe(bwrap: str | None = None, user: JobUser | None = None,
          python: str = sys.executable) -> SandboxFeatures:
    """Ask the launcher what it can do here, and find the cgroup hierarchy (blocking)."""
    notes: list[str] = []
    found: dict[str, object] = {}
    options = json.dumps({"bwrap": bwrap, "user": [user.uid, user.gid] if user else None})
    try:
        done = subprocess.run([python, "-I", "-S", str(LAUNCHER), "--probe", options],
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              check=False, env=LAUNCHER_ENV)
        found = json.loads(done.stdout or "{}")
        if done.returncode != 0:
            notes.append(f"probe exited {done.returncode}: {done.stderr.strip()[-200:]}")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        notes.append(f"probe failed: {exc}")
    for key in ("netns_error", "private_tmpfs_error", "bwrap_error"):
        if found.get(key):
            notes.append(f"{key.removesuffix('_error')}: {found[key]}")
    return SandboxFeatures(
        netns=found.get("netns") is True, private_tmpfs=found.get("private_tmpfs") is True,
        cgroups=detect(), netns_how=str(found.get("netns_how", "none")), notes=tuple(notes),
        bwrap=found.get("bwrap") is True,
        bwrap_error=None if found.get("bwrap") is True else str(
            found.get("bwrap_error") or "the probe did not answer"))


_hosts: dict[tuple[str | None, JobUser | None], SandboxFeatures] = {}


def host_features(bwrap: str | None = None, user: JobUser | None = None) -> SandboxFeatures:
    """The probe's answer for this process, computed on first use and logged once."""
    key = (bwrap, user)
    if key not in _hosts:
        found = _hosts[key] = probe(bwrap, user)
        log.info("sandbox: %s", found.describe(), extra={"notes": list(found.notes)})
    return _hosts[key]
