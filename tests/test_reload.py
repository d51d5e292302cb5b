"""Reloading the config in a running miner (SIGHUP): what applies live, what waits for a
restart, and the CPU slots that come and go. The signal itself, and systemd's view of
it, are tested on a real process in tests/integration/test_service.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aitbc_miner.config import ConfigError, Settings, load_settings
from aitbc_miner.engine import SlotPool
from aitbc_miner.host.reload import Reloader
from aitbc_miner.host.runtime import build_engine
from aitbc_miner.runners.base import SlotKind
from aitbc_miner.runners.cli import CliRunner
from tests.runners.helpers import behave


def settings_at(tmp_path: Path, **sections: Any) -> Settings:
    """Settings as a config file would give them, the miner's files under ``tmp_path``."""
    data: dict[str, Any] = {
        "miner": {"key": "k-test", "id": "rig-test"},
        "slots": {"cpu": 2, "gpu": 0},
        "inference": {"backend": "off"},
        "paths": {"state_dir": str(tmp_path / "state"), "data_dir": str(tmp_path / "data")},
        "runners": {"allowlist_dirs": [str(tmp_path / "allowlist.d")]},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path, env={})


def write_commands(tmp_path: Path, *names: str) -> None:
    folder = tmp_path / "allowlist.d"
    folder.mkdir(mode=0o755, exist_ok=True)
    entries = {name: behave("echo", network="host") for name in names}
    (folder / "jobs.yaml").write_text(yaml.safe_dump({"commands": entries}))


def cli_runner(reloader: Reloader) -> CliRunner:
    return next(r for r in reloader.engine.core.registry.runners if isinstance(r, CliRunner))


async def test_a_reload_applies_live_keys_and_allowlists_and_reports_the_rest(
        tmp_path: Path) -> None:
    # Given a miner built from a config, with one allowlisted command
    write_commands(tmp_path, "first")
    started = settings_at(tmp_path)
    engine = build_engine(started)
    reloader = Reloader(engine, started, lambda: settings_at(
        tmp_path, poll={"max_interval_s": 0.5}, slots={"cpu": 3},
        runners={"limits": {"memory_mb": 512}, "isolation": "none"},
        coordinator={"url": "http://127.0.0.1:1"}))
    core = engine.core
    core.need_register = False

    # When the allowlist gains a command, the config changes, and the miner reloads
    write_commands(tmp_path, "first", "second")
    outcome = reloader()

    # Then the live keys apply at once
    assert outcome.applied == ("poll.max_interval_s", "slots.cpu", "runners.limits.memory_mb")
    assert core.tuning.poll_max_s == 0.5
    assert [s.slot_id for s in core.pool.slots] == ["cpu:0", "cpu:1", "cpu:2"]
    runner = cli_runner(reloader)
    assert runner.settings.limits.memory_mb == 512
    # the allowlist is read again, though no key named it changed
    assert set(runner.allowlist.entries) == {"first", "second"}
    # and the miner will register again with what it now offers
    assert core.need_register
    # while the rest waits for a restart, and keeps its running value
    assert outcome.need_restart == ("coordinator.url", "runners.isolation")
    assert core.tuning.coordinator_url == started.coordinator.root
    assert runner.settings.isolation == "bwrap" and runner.sandbox.isolation.value == "bwrap"
    assert "needs a restart: coordinator.url, runners.isolation" in outcome.summary()

    # When it reloads again with nothing new
    core.need_register = False
    again = reloader()
    # Then nothing is applied and nothing re-registers; the restart is still owed
    assert again.applied == () and not core.need_register
    assert again.need_restart == ("coordinator.url", "runners.isolation")


async def test_a_config_that_does_not_load_changes_nothing(tmp_path: Path) -> None:
    write_commands(tmp_path, "first")
    started = settings_at(tmp_path)
    engine = build_engine(started)

    def broken() -> Settings:
        raise ConfigError("config error: slots.cpu: Input should be greater than or equal to 0")

    with pytest.raises(ConfigError):
        Reloader(engine, started, broken)()
    assert engine.core.tuning.poll_max_s == started.poll.max_interval_s
    assert engine.core.pool.usable() == 2


async def test_cpu_slots_taken_away_while_busy_finish_their_job_first() -> None:
    # Given three CPU slots beside a GPU slot, two of them busy
    pool = SlotPool.from_counts(cpu=3, gpu=1)
    busy = [await pool.acquire(SlotKind.CPU, job) for job in ("j0", "j1")]

    # When the pool shrinks to one CPU slot
    pool.set_cpu(1)
    # Then the idle one goes at once, the busy one stays until its job is done, and
    # neither takes work or counts as concurrency meanwhile
    assert [(s.slot_id, s.job_id) for s in pool.slots] == [
        ("cpu:0", "j0"), ("cpu:1", "j1"), ("gpu:0", None)]
    assert pool.usable() == 2
    pool.release(busy[1])
    assert [s.slot_id for s in pool.slots] == ["cpu:0", "gpu:0"]

    # When it grows again, new slots take the free names, before the GPU's
    pool.set_cpu(3)
    assert [s.slot_id for s in pool.slots] == ["cpu:0", "cpu:1", "cpu:2", "gpu:0"]
    assert (await pool.acquire(SlotKind.CPU, "j2")).slot_id == "cpu:1"
