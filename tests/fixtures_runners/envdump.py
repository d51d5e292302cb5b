"""A job that reports every environment it can see, hex-encoded (so no redaction on the
way out can hide a leak): its own (``os.environ`` and ``/proc/self/environ``), PID 1's, its
parent's, every other process's it can read, and the agent's (``agent_pid``), plus the
sha256 of each secret file it was given. Standard library only.

Run as an allowlisted command (``envdump.py '<json>'``, report on stdout) or as the trusted
function ``envdump:dump``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any


def _blob(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().hex()
    except OSError as exc:
        return f"unreadable: {type(exc).__name__}"


def dump(payload: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "os_environ": json.dumps(dict(os.environ)).encode().hex(),
        "self": _blob("/proc/self/environ"),
        "pid1": _blob("/proc/1/environ"),
        "parent": _blob(f"/proc/{os.getppid()}/environ"),
        "others": {pid: _blob(f"/proc/{pid}/environ") for pid in os.listdir("/proc")
                   if pid.isdigit()},
    }
    if payload.get("agent_pid"):
        seen["agent"] = _blob(f"/proc/{int(payload['agent_pid'])}/environ")
    secrets: dict[str, str] = {}
    folder = os.environ.get("AITBC_SECRETS_DIR")
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as fh:
                secrets[name] = hashlib.sha256(fh.read()).hexdigest()
    seen["secrets"] = secrets
    return seen


if __name__ == "__main__":
    print(json.dumps(dump(json.loads(sys.argv[1]))), flush=True)
