"""A real SoftHSM2 token for a test: its own config and token folder, data objects in it.

The token is made by ``softhsm2-util`` and filled by python-pkcs11 in a child process:
SoftHSM2 reads ``SOFTHSM2_CONF`` once per process, so the test process itself never loads
the module (another test's token may live elsewhere). ``.ci/run`` installs ``softhsm2``;
the module's path comes from the identity tests' fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.identity.conftest import SO_PIN, softhsm_module

_FILL = """
import json, sys, pkcs11
from pkcs11 import Attribute, ObjectClass
order = json.load(sys.stdin)
token = pkcs11.lib(order["module"]).get_token(token_label=order["label"])
with token.open(user_pin=order["pin"], rw=True) as session:
    for label, value in order["objects"].items():
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label,
                               Attribute.VALUE: bytes.fromhex(value), Attribute.TOKEN: True,
                               Attribute.PRIVATE: True})
"""


@dataclass(frozen=True)
class Token:
    module: Path
    label: str
    pin: str
    conf: Path

    def env(self) -> dict[str, str]:
        """What a process using this token needs in its environment."""
        return {"SOFTHSM2_CONF": str(self.conf)}


def softhsm_token(root: Path, label: str, pin: str, objects: dict[str, bytes]) -> Token:
    """A fresh token labelled ``label`` under ``root``, holding ``objects`` (private data
    objects, by label), readable once logged in with ``pin``."""
    module = softhsm_module()  # SoftHSM2 missing fails the test: .ci/run installs it
    tokens = root / "softhsm-tokens"
    tokens.mkdir(mode=0o700, parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    token = Token(module, label, pin, conf)
    env = {**os.environ, **token.env()}
    made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                           "--pin", pin, "--so-pin", SO_PIN], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    order = {"module": str(module), "label": label, "pin": pin,
             "objects": {k: v.hex() for k, v in objects.items()}}
    filled = subprocess.run([sys.executable, "-c", _FILL], input=json.dumps(order), env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert filled.returncode == 0, filled.stderr
    return token
