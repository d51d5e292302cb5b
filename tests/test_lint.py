"""The sources pass ``ruff check``, and the engine ``mypy --strict``, under pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_check_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "aitbc_miner", "tui", "tests", "bench"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"ruff check failed:\n{proc.stdout}{proc.stderr}"


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[test]')")
def test_the_engine_passes_mypy_strict() -> None:
    # The engine's typed boundaries are checked, not hoped for: `mypy --strict` (the config
    # in pyproject.toml) over aitbc_miner and what it imports.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "aitbc_miner"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mypy --strict failed:\n{proc.stdout}{proc.stderr}"
