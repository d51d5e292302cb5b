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

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("launch.py")
PROBE_TIMEOUT_S = 20.0  # a probe that hangs longer means "no isolation", never a stuck agent


@dataclass(frozen=True, slots=True)
class SandboxFeatures:
    """The host's answer; build one by hand in tests to play a host without isolation."""

    netns: bool
    private_tmpfs: bool
    cgroups: CgroupHost = field(default_factory=lambda: CgroupHost(CgroupMode.NONE))
    netns_how: str = "none"
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        net = f"network namespace ({self.netns_how})" if self.netns else "no network namespace"
        tmpfs = "private tmpfs" if self.private_tmpfs else "secrets in /dev/shm"
        groups = (f"cgroup {self.cgroups.mode.value}" if self.cgroups.mode is not CgroupMode.NONE
                  else f"rlimits only ({self.cgroups.reason})")
        return f"{net}, {tmpfs}, {groups}"


def probe(python: str = sys.executable) -> SandboxFeatures:
    """Ask the launcher what it can do here, and find the cgroup hierarchy (blocking)."""
    notes: list[str] = []
    found: dict[str, object] = {}
    try:
        done = subprocess.run([python, "-I", "-S", str(LAUNCHER), "--probe"], capture_output=True,
                              text=True, timeout=PROBE_TIMEOUT_S, check=False)
        found = json.loads(done.stdout or "{}")
        if done.returncode != 0:
            notes.append(f"probe exited {done.returncode}: {done.stderr.strip()[-200:]}")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        notes.append(f"probe failed: {exc}")
    for key in ("netns_error", "private_tmpfs_error"):
        if found.get(key):
            notes.append(f"{key.removesuffix('_error')}: {found[key]}")
    return SandboxFeatures(
        netns=found.get("netns") is True, private_tmpfs=found.get("private_tmpfs") is True,
        cgroups=detect(), netns_how=str(found.get("netns_how", "none")), notes=tuple(notes))


_host: SandboxFeatures | None = None


def host_features() -> SandboxFeatures:
    """The probe's answer for this process, computed on first use and logged once."""
    global _host
    if _host is None:
        _host = probe()
        log.info("sandbox: %s", _host.describe(), extra={"notes": list(_host.notes)})
    return _host
