"""A real SoftHSM2 token per test (Debian package softhsm2, installed by .ci/run).

The test initialises the token itself (``softhsm2-util --init-token``) in a temporary
SOFTHSM2_CONF folder. SoftHSM reads that variable when the module is initialised, and
python-pkcs11 loads the module once a process, so the fixture re-initialises it around
each test (finalize closes every session the test left open).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest

from aitbc_miner.config.model import TokenSettings
from tests.integration.conftest import miner as agent  # noqa: F401 - fixtures: a real agent,
from tests.integration.conftest import procs, start_devnet  # noqa: F401 - a devnet process

MODULE_CANDIDATES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
TOKEN_LABEL = "rig-test"
PIN = "pin-4821-rig"  # distinctive: log redaction of a short PIN would blur other text
SO_PIN = "so-pin-9317"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    conf: Path
    folder: Path
    token_label: str = TOKEN_LABEL
    pin: str = PIN

    @property
    def pin_file(self) -> Path:
        return self.folder / "pin"

    def settings(self, key_label: str = "aitbc-rig") -> TokenSettings:
        return TokenSettings(module=self.module, token_label=self.token_label,
                             key_label=key_label, pin_file=self.pin_file)

    def config(self, state_dir: Path, *, pin_file: Path | None = None) -> Path:
        """A miner config file naming this token (and ``state_dir``)."""
        path = state_dir.parent / f"{state_dir.name}.yaml"
        path.write_text(
            f"paths: {{state_dir: {state_dir}, data_dir: {state_dir / 'data'}}}\n"
            "identity:\n  token:\n"
            f"    module: {self.module}\n    token_label: {self.token_label}\n"
            f"    pin_file: {pin_file or self.pin_file}\n", encoding="utf-8")
        return path


def softhsm_module() -> Path:
    found = next((path for path in MODULE_CANDIDATES if path.is_file()), None)
    if found is None or shutil.which("softhsm2-util") is None:
        pytest.fail("SoftHSM2 is not installed: apt-get install softhsm2 (.ci/run does)")
    return found


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SoftHsm]:
    module = softhsm_module()
    folder = tmp_path / "softhsm"
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n", encoding="utf-8")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
                    "--pin", PIN, "--so-pin", SO_PIN], check=True, capture_output=True)
    pin_file = folder / "pin"
    pin_file.write_text(PIN + "\n", encoding="utf-8")
    pin_file.chmod(0o600)
    lib = pkcs11.lib(str(module))
    lib.finalize()  # read this test's SOFTHSM2_CONF
    lib.initialize()
    yield SoftHsm(module, conf, folder)
    lib.finalize()


def miner(*args: str, env: dict[str, str] | None = None,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A real ``aitbc-miner`` process (this checkout's code), as an operator runs it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_MINER_")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "aitbc_miner", *args], capture_output=True,
                          text=True, env=full_env, input=stdin, timeout=60, cwd=ROOT)
