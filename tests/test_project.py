"""Promises the repository makes about itself: docs in step with code and CI."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from aitbc_miner.codes import ERROR_CODES, ErrorCode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_error_code_has_a_row_in_the_code_table_and_the_readme() -> None:
    assert set(ERROR_CODES) == set(ErrorCode)
    for code, meaning in ERROR_CODES.items():
        assert f"| `{code.value}` | {meaning} |" in README, code


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    commands = [line for block in blocks for line in block.splitlines()
                if line and not line.startswith("#")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in ci.splitlines()


def test_quick_start_runs_the_demo_in_one_command() -> None:
    assert "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/aitbc-miner demo" \
        in README


def test_no_tracked_file_refers_to_paths_outside_the_repository() -> None:
    # Given every tracked text file (binary files and SVG snapshots skipped)
    outside = ("../" + "shared", "/" + "work/")  # spelled apart, so this file passes too
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                            capture_output=True).stdout.decode().split("\0")
    offenders = []
    for name in filter(None, listed):
        path = ROOT / name
        if name.endswith(".svg") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        # Then none names the workspace it was written in: the repository stands alone
        text = data.decode("utf-8", errors="replace")
        offenders += [f"{name}: {needle}" for needle in outside if needle in text]
    assert offenders == []
