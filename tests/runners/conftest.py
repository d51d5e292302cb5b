"""Fixtures for the runner tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.runners.allowlist import Allowlist
from aitbc_miner.runners.base import SlotKind
from aitbc_miner.runners.cli import CliRunner
from aitbc_miner.runners.settings import RunnerSettings
from aitbc_miner.sandbox import Sandbox

from .helpers import FAST_KILL, sandbox_or_skip, traversable, write_allowlist

RunnerFactory = Callable[..., CliRunner]


@pytest.fixture(autouse=True)
def job_user_may_pass(tmp_path: Path) -> None:
    """A root agent's jobs run as an unprivileged user, who must reach what an entry names
    (pytest's folders are 0700): let them pass through, never list."""
    traversable(tmp_path)


@pytest.fixture
def make_runner(tmp_path: Path) -> RunnerFactory:
    """A CliRunner over the given entries, with short kill delays unless told otherwise."""

    def factory(commands: dict[str, Any], *, sandbox: Sandbox | None = None,
                slot_kind: SlotKind = SlotKind.CPU, **settings: Any) -> CliRunner:
        if sandbox is None:
            sandbox_or_skip()
        folder = write_allowlist(tmp_path / "allowlist.d", commands)
        settings.setdefault("kill", FAST_KILL)
        config = RunnerSettings.model_validate({"allowlist_dirs": [folder], **settings})
        allowlist = Allowlist.load(config.allowlist_dirs, secrets=config.secrets.keys())
        return CliRunner(config, allowlist=allowlist, sandbox=sandbox, slot_kind=slot_kind)

    return factory




@pytest.fixture
async def artifact_store() -> AsyncIterator[tuple[Any, str]]:
    """An artifact endpoint on loopback: yields (store, base URL)."""
    from aitbc_miner.devnet.artifacts import ArtifactStore, serve

    store = ArtifactStore()
    runner, url = await serve(store)
    yield store, url
    await runner.cleanup()
