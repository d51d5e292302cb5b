"""Running part of a test as the unprivileged user ``.ci/run`` creates (``aitbc-test``).

The agent's own interpreter may live where that user cannot go (a Python under /root),
so the user runs the system's Python of the same version, with this repository and the
test environment's site-packages on its path. A test that needs it skips, saying why,
where the pieces are missing (not root, no such user, no such Python).
"""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

USER = "aitbc-test"
REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


def as_user() -> tuple[list[str], dict[str, str], pwd.struct_passwd]:
    """The argv prefix (it sets the paths the user needs, whatever environment the command
    gets), a minimal environment, and the account, to run Python as ``aitbc-test``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to play an unprivileged agent")
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER!r} (.ci/run creates it)")
    setpriv = shutil.which("setpriv")
    if setpriv is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"needs setpriv and {SYSTEM_PYTHON}")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    prefix = [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
              "--clear-groups", "/usr/bin/env", f"PYTHONPATH={path}", "HOME=/tmp",
              SYSTEM_PYTHON]
    check = subprocess.run([*prefix, "-c", "import aitbc_miner.engine, pydantic"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    if check.returncode != 0:
        pytest.skip(f"{USER} cannot import the miner here: {check.stderr.strip()[-300:]}")
    return prefix, env, account


def give(path: Path, account: pwd.struct_passwd) -> None:
    """Hand ``path`` (a folder tree) to ``account``, and let it pass through the parents."""
    for item in [path, *path.rglob("*")]:
        os.chown(item, account.pw_uid, account.pw_gid)
    for parent in path.parents:
        if parent in (Path("/"), Path("/tmp")):
            break
        parent.chmod(parent.stat().st_mode & 0o7777 | 0o111)
