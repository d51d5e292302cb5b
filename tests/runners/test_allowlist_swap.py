"""The file checked is the file run: swapping an allowlisted executable races nothing.

A loop replaces the allowlisted path, as fast as it can, with either the operator's
program or an impostor the checks would refuse (group-writable). Every job either runs
the operator's program or is refused, naming the rule; the impostor never runs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.base import JobFailed

from .helpers import make_ctx

GOOD = b"#!/bin/sh\necho operator\n"
EVIL = b"#!/bin/sh\necho IMPOSTOR\n"
JOBS = 30


def _swapper(target: Path, stop: threading.Event, swaps: list[int]) -> None:
    folder = target.parent
    n = 0
    while not stop.is_set():
        body, mode = (GOOD, 0o755) if n % 2 else (EVIL, 0o775)
        tmp = folder / f".swap-{n % 2}"
        tmp.write_bytes(body)
        tmp.chmod(mode)
        os.replace(tmp, target)
        n += 1
    swaps.append(n)


async def test_a_file_swapped_between_check_and_run_never_runs(make_runner, tmp_path):
    # Given an allowlisted program in a folder only the miner's user may write
    folder = tmp_path / "bin"
    folder.mkdir(mode=0o755)
    tool = folder / "tool"
    tool.write_bytes(GOOD)
    tool.chmod(0o755)
    runner = make_runner({"tool": {"executable": str(tool), "network": "none"}})
    # When a loop keeps swapping it for an impostor while jobs run
    stop, swaps = threading.Event(), []
    thread = threading.Thread(target=_swapper, args=(tool, stop, swaps), daemon=True)
    thread.start()
    ran, refused = 0, []
    try:
        for _ in range(JOBS):
            try:
                output = await runner.run({"type": "cli", "command": "tool"}, make_ctx(tmp_path))
            except JobFailed as exc:
                assert exc.code is ErrorCode.E_DENY, exc
                refused.append(exc.message)
                continue
            # Then what ran is the operator's program, never the impostor
            assert output.result["stdout"] == "operator\n"
            ran += 1
    finally:
        stop.set()
        thread.join(10)
    assert swaps and swaps[0] > JOBS  # the race really was on
    assert ran + len(refused) == JOBS
    assert all(m.startswith(("executable.writable:", "executable.missing:",
                             "executable.changed:")) for m in refused), refused
    # And once the swapping stops, the operator's program runs again
    tool.write_bytes(GOOD)
    tool.chmod(0o755)
    output = await runner.run({"type": "cli", "command": "tool"}, make_ctx(tmp_path))
    assert output.result["stdout"] == "operator\n"


async def test_a_swap_right_after_the_check_is_refused_and_right_after_the_open_is_moot(
        make_runner, tmp_path, monkeypatch):
    """The two windows of the race, hit every time: after the path was checked, and after
    the file was opened (the sandbox then runs what was opened, or nothing)."""
    from aitbc_miner.runners import allowlist as allowlist_module
    from aitbc_miner.runners import cli as cli_module

    folder = tmp_path / "bin"
    folder.mkdir(mode=0o755)
    tool = folder / "tool"

    def put(body: bytes, mode: int) -> None:
        tmp = folder / ".new"
        tmp.write_bytes(body)
        tmp.chmod(mode)
        os.replace(tmp, tool)

    put(GOOD, 0o755)
    runner = make_runner({"tool": {"executable": str(tool), "network": "none"}})
    checked = allowlist_module.executable_problem
    opened = cli_module.open_executable
    # Window 1: the impostor lands just after the path check passed
    monkeypatch.setattr(allowlist_module, "executable_problem",
                        lambda path: checked(path) or put(EVIL, 0o775))
    try:
        await runner.run({"type": "cli", "command": "tool"}, make_ctx(tmp_path))
        raise AssertionError("the impostor was not refused")
    except JobFailed as exc:
        assert exc.code is ErrorCode.E_DENY and exc.message.startswith("executable.writable:")
    # Window 2: the impostor lands just after the operator's file was opened
    monkeypatch.setattr(allowlist_module, "executable_problem", checked)
    put(GOOD, 0o755)

    def open_then_swap(path: Path) -> int:
        fd = opened(path)
        put(EVIL, 0o775)
        return fd

    monkeypatch.setattr(cli_module, "open_executable", open_then_swap)
    try:
        output = await runner.run({"type": "cli", "command": "tool"}, make_ctx(tmp_path))
        assert output.result["stdout"] == "operator\n"  # what was opened is what ran
    except JobFailed as exc:  # or nothing ran, and the client is told why
        assert exc.code is ErrorCode.E_DENY and exc.message.startswith("executable.changed:")
