"""Reloading the configuration in a running miner (SIGHUP, ``systemctl reload``).

The config is read again, in full, exactly as at start (file, environment, flags), and so
are the allowlist files. Keys in ``LIVE`` take effect at once; any other key that differs
from what the miner started with is reported as needing a restart and keeps its running
value. A config that does not load changes nothing. Jobs already running keep the limits
they started with; when what the miner offers changes (commands, slots, region, price)
it registers again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ..config import Settings
from ..engine import Engine
from ..runners.allowlist import Allowlist
from ..runners.cli import CliRunner, make_uploader
from ..runners.python import PythonRunner
from .runtime import tuning_from

log = logging.getLogger(__name__)

#: Keys (and sections) a reload applies to the running miner.
LIVE = (
    "heartbeat_interval_s", "poll", "jobs", "workspace", "miner.region", "miner.price",
    "slots.cpu", "runners.allowlist_dirs", "runners.limits", "runners.python",
    "runners.artifacts", "runners.secrets", "log.level",
)
#: The engine's tuning fields those keys feed.
_LIVE_TUNING = (
    "heartbeat_interval_s", "poll_min_s", "poll_max_s", "default_timeout_s", "max_timeout_s",
    "drain_grace_s", "region", "price", "retention_jobs", "retention_days", "min_free_mb",
)
#: Runner settings the sandbox was built with: a restart applies them.
_SANDBOX_KEYS = ("isolation", "job_user", "kill")


def is_live(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in LIVE)


def flat(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Every leaf setting as ``dotted.key: value`` (lists and mappings are leaves)."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def changed_keys(old: Settings, new: Settings) -> list[str]:
    before, after = flat(old), flat(new)
    return [key for key in after if before.get(key) != after[key]]


@dataclasses.dataclass(frozen=True)
class Reloaded:
    applied: tuple[str, ...]  # live keys that changed since the last load
    need_restart: tuple[str, ...]  # keys that differ from the start, applied by a restart

    def summary(self) -> str:
        text = ("applied " + ", ".join(self.applied)) if self.applied else "nothing to apply"
        if self.need_restart:
            text += "; needs a restart: " + ", ".join(self.need_restart)
        return text


class Reloader:
    """Reads the config with ``load`` and applies what it can to ``engine``."""

    def __init__(self, engine: Engine, settings: Settings, load: Callable[[], Settings]) -> None:
        self.engine = engine
        self.started = settings  # what a restart-only key keeps until a restart
        self.current = settings
        self.load = load

    def __call__(self) -> Reloaded:
        """Raises ``ConfigError`` (nothing changed) when the config does not load."""
        new = self.load()
        applied = [k for k in changed_keys(self.current, new) if is_live(k)]
        need_restart = [k for k in changed_keys(self.started, new) if not is_live(k)]
        self._apply(new)
        self.current = new
        return Reloaded(tuple(applied), tuple(need_restart))

    def _apply(self, new: Settings) -> None:
        """Every live value, whether it changed or not (so this is safe to repeat); the
        allowlist files are read again each time, since editing them changes no key."""
        core = self.engine.core
        offer = self._offer()
        fresh = tuning_from(new)
        core.tuning = dataclasses.replace(
            core.tuning, **{name: getattr(fresh, name) for name in _LIVE_TUNING})
        core.pool.set_cpu(new.slots.cpu)
        self._reconfigure_runners(new)
        logging.getLogger("aitbc_miner").setLevel(new.log.level)
        if offer != self._offer():
            core.capabilities_changed()  # register again: commands, slots, region, price
        core.wake_poll.set()
        core.wake_disk.set()
        core.changed()

    def _offer(self) -> tuple[object, ...]:
        """What registration tells the coordinator, as far as a reload can change it."""
        core = self.engine.core
        return (core.registry.capabilities(), core.pool.usable(), core.tuning.region,
                core.tuning.price)

    def _reconfigure_runners(self, new: Settings) -> None:
        core = self.engine.core
        kept = {k: getattr(self.started.runners, k) for k in _SANDBOX_KEYS}
        rs = new.runners.model_copy(update=kept)
        allowlist = Allowlist.load(rs.allowlist_dirs, secrets=rs.secrets.keys())
        uploader = make_uploader(rs, {"X-Api-Key": core.miner_key,
                                      "X-Miner-ID": core.tuning.miner_id})
        for runner in core.registry.runners:
            if isinstance(runner, CliRunner):
                runner.reconfigure(rs, allowlist, uploader)
            elif isinstance(runner, PythonRunner):
                runner.reconfigure(rs, uploader)
