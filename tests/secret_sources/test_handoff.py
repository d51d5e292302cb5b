"""The start's re-exec: secret variables leave the environment block, the PID stays, and
the new image still reads them as settings (from an inherited memory file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from aitbc_miner.handoff import HANDOFF_FD_VAR, HandoffError, receive_handoff

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os
from aitbc_miner.handoff import (
    receive_handoff, reexec_without, secret_variables, settings_environment)
receive_handoff()
names = secret_variables(extra=["MY_PIN"])
if names:
    print(json.dumps({"stage": "first", "pid": os.getpid(), "moved": names}), flush=True)
    reexec_without(names)
with open("/proc/self/environ", "rb") as fh:
    block = fh.read().decode()
wanted = ("AITBC", "MY_PIN")
def target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the folder listing's own descriptor, closed by now
        return ""
print(json.dumps({
    "stage": "second", "pid": os.getpid(), "environ": block,
    "settings": {k: v for k, v in settings_environment().items() if k.startswith(wanted)},
    "os_environ": sorted(k for k in os.environ if k.startswith(wanted)),
    "memfds": [n for n in os.listdir("/proc/self/fd") if target(n).startswith("/memfd:")]}))
"""


def test_secret_variables_leave_the_block_and_reach_the_new_image(tmp_path: Path) -> None:
    key, pin = f"key-{uuid.uuid4().hex}", f"pin-{uuid.uuid4().hex}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "AITBC_MINER_MINER__KEY": key, "AITBC_MINER_SLOTS__CPU": "3",
           "AITBC_MINER_CONFIG": str(tmp_path / "c.yaml"), "MY_PIN": pin, "OTHER": "kept"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    # The exec kept the process: same PID
    assert (first["stage"], second["stage"]) == ("first", "second")
    assert second["pid"] == first["pid"]
    assert first["moved"] == ["AITBC_MINER_MINER__KEY", "AITBC_MINER_SLOTS__CPU", "MY_PIN"]
    # The new image's environment block holds neither secret, nor their names
    block = second["environ"]
    assert key not in block and pin not in block
    assert "AITBC_MINER_MINER__KEY" not in block and "MY_PIN=" not in block
    assert "OTHER=kept" in block and "AITBC_MINER_CONFIG=" in block
    # os.environ (what a child would inherit) lacks them too; the settings still see them
    assert second["os_environ"] == ["AITBC_MINER_CONFIG"]
    assert second["settings"] == {"AITBC_MINER_MINER__KEY": key, "AITBC_MINER_SLOTS__CPU": "3",
                                  "AITBC_MINER_CONFIG": env["AITBC_MINER_CONFIG"],
                                  "MY_PIN": pin}
    # And the memory file was closed once read
    assert second["memfds"] == []


def test_a_handoff_variable_naming_another_file_is_refused() -> None:
    with pytest.raises(HandoffError, match="is not the miner's hand-over file"):
        receive_handoff({HANDOFF_FD_VAR: "0"})
    with pytest.raises(HandoffError, match="not an open file"):
        receive_handoff({HANDOFF_FD_VAR: "987"})
    with pytest.raises(HandoffError, match="file descriptor number"):
        receive_handoff({HANDOFF_FD_VAR: "x"})
    os.environ.pop(HANDOFF_FD_VAR, None)


def test_the_cli_refuses_a_forged_handoff_with_one_line() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), HANDOFF_FD_VAR: "0"}
    done = subprocess.run([sys.executable, "-m", "aitbc_miner", "--headless"], env=env,
                          capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "aitbc-miner: error: cannot take the secrets out of the environment: "
        f"{HANDOFF_FD_VAR}=0 is not the miner's hand-over file"]
