"""What the probe finds, as the agent's user and as an unprivileged one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from aitbc_miner.sandbox import probe
from aitbc_miner.sandbox.features import LAUNCHER
from aitbc_miner.sandbox.isolation import find_bwrap

from .helpers import PY


def test_probe_reports_each_isolation_with_its_reason():
    found = probe(find_bwrap())
    # Each finding is a plain yes/no, and a "no" always comes with a note saying why
    assert isinstance(found.netns, bool) and isinstance(found.private_tmpfs, bool)
    assert isinstance(found.bwrap, bool)
    if not (found.netns and found.private_tmpfs and found.bwrap):
        assert found.notes
    assert found.describe().count(",") == 3


def test_without_bubblewrap_the_probe_says_so():
    found = probe(None)
    assert found.bwrap is False and found.bwrap_error == "no bubblewrap executable"
    assert found.describe().startswith("no bubblewrap (no bubblewrap executable)")


def test_an_unprivileged_agent_isolates_through_a_user_namespace():
    # Given the launcher run as `nobody` (no capabilities at all)
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to play an unprivileged user")
    done = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", PY,
                           "-I", "-S", str(LAUNCHER), "--probe"], capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode != 0:
        pytest.skip(f"nobody cannot run the interpreter here: {done.stderr.strip()[-200:]}")
    found = json.loads(done.stdout)
    if found["netns_error"] and "Operation not permitted" in found["netns_error"]:
        pytest.skip("this kernel does not allow unprivileged user namespaces")
    # Then it still gets a network namespace and a private tmpfs, through a user namespace
    assert found["netns"] is True and found["netns_how"] == "user-namespace"
    assert found["private_tmpfs"] is True
