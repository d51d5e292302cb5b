"""Assembling an Engine from the config, and hosting it: headless, or under the console.

Signals belong here, not in the engine (``Engine`` has no signal code). Headless:
SIGTERM (and SIGINT) = drain, then exit once running jobs are done (after
``jobs.drain_grace_s`` they are canceled); a second one = cancel running jobs, then exit.
SIGHUP = reload the configuration (``Host.on_reload``; never exits). Under the console,
SIGHUP means its terminal is gone (SSH dropped, tmux killed): the console closes and the
miner runs on without it, as if headless, until a termination signal (docs/attach.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..codes import ExitCode
from ..config import ConfigError, Settings
from ..energy import tariff_from
from ..engine import Engine, SlotPool, Tuning
from ..engine.snapshot import AuthRefusedEvent
from ..gpu import GpuSlotSpec, Nvml, Sampler, gpu_slot_specs, simulated_nvml
from ..gpu.simulate import lost_file
from ..identity.rigkey import open_rig_key
from ..identity.signed_result import ResultSigner
from ..logs import add_static_field
from ..runners import Runner, RunnerRegistry
from ..runners.allowlist import Allowlist
from ..runners.base import SlotKind
from ..runners.builtin import BuiltinRunner
from ..runners.cli import CliRunner, make_uploader
from ..runners.gpu_watch import TelemetryGpuSampler
from ..runners.ollama import DEFAULT_OLLAMA_URL, OllamaRunner
from ..runners.openai_compat import DEFAULT_OPENAI_URL, OpenAICompatRunner
from ..runners.python import PythonRunner
from ..runners.sandboxed import make_sandbox
from ..sandbox import Isolation, Sandbox
from ..secretsource import use_token
from .control import SOCKET_NAME, ControlAccess, ControlServer
from .metrics import MetricsServer
from .sdnotify import Notifier, notify_systemd, status_line

if TYPE_CHECKING:
    from .reload import Reloaded

log = logging.getLogger("aitbc_miner.host.runtime")


class MissingKey(Exception):
    """No miner key was configured."""


def tuning_from(settings: Settings) -> Tuning:
    return Tuning(
        miner_id=settings.miner.id,
        coordinator_url=settings.coordinator.root,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        poll_min_s=settings.poll.min_interval_s,
        poll_max_s=settings.poll.max_interval_s,
        default_timeout_s=settings.jobs.default_timeout_s,
        max_timeout_s=settings.jobs.max_timeout_s,
        drain_grace_s=settings.jobs.drain_grace_s,
        region=settings.miner.region,
        price=settings.miner.price,
        pinned_key=settings.coordinator.public_key,
        retention_jobs=settings.workspace.retention_jobs,
        retention_days=settings.workspace.retention_days,
        min_free_mb=settings.workspace.min_free_mb,
        tariff=tariff_from(settings),
    )


def build_engine(
    settings: Settings,
    *,
    registry: RunnerRegistry | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    exit_when_drained: bool = False,
    seed: int | None = None,
) -> Engine:
    key = settings.miner_key()
    if not key:
        raise MissingKey(
            "no miner key: set miner.key_source (a credential, a file on tmpfs or a token "
            "object), miner.key_file or AITBC_MINER_MINER__KEY (a service reads the systemd "
            "credential miner-key; docs/secrets.md)")
    use_token(settings.identity.token)  # job secrets' token_object sources
    ensure_private_dir(settings.paths.effective_state_dir)
    telemetry, specs = probe_gpus(settings)
    if registry is None:
        registry = default_registry(settings, key, telemetry, gpu_slots=bool(specs))
    rig_key = open_rig_key(settings, create=True)  # blocks (a token): before the loop runs
    log.info("rig identity: key %s (%s); every result is signed with it", rig_key.key_id,
             rig_key.info().location, extra={"rig_key_id": rig_key.key_id})
    engine = Engine(
        tuning_from(settings),
        miner_key=key,
        journal_path=settings.paths.journal_path,
        workspace_root=settings.paths.jobs_dir,
        pool=SlotPool.from_specs(settings.slots.cpu, specs),
        telemetry=telemetry,
        registry=registry,
        connect_timeout_s=settings.coordinator.connect_timeout_s,
        read_timeout_s=settings.coordinator.read_timeout_s,
        transport=transport,
        seed=seed,
        signer=ResultSigner(rig_key, settings.miner.id),
    )
    engine.core.exit_when_drained = exit_when_drained
    return engine


def default_registry(settings: Settings, key: str, telemetry: Sampler | None, *,
                     gpu_slots: bool) -> RunnerRegistry:
    """Built-in jobs, allowlisted commands, trusted Python functions and the LLM backend."""
    rs = settings.runners
    allowlist = Allowlist.load(rs.allowlist_dirs, secrets=rs.secrets.keys())
    sandbox = make_sandbox(rs)  # one sandbox, so its one-time notices appear once
    announce_isolation(sandbox)
    uploader = make_uploader(rs, {"X-Api-Key": key, "X-Miner-ID": settings.miner.id})
    runners: list[Runner] = [
        BuiltinRunner(),
        CliRunner(rs, allowlist=allowlist, sandbox=sandbox, uploader=uploader),
        PythonRunner(rs, sandbox=sandbox, uploader=uploader),
    ]
    if gpu_slots:
        runners.append(CliRunner(rs, allowlist=allowlist, sandbox=sandbox, uploader=uploader,
                                 slot_kind=SlotKind.GPU))
    backend = inference_runner(settings, telemetry)
    if backend is not None:
        runners.append(backend)
    return RunnerRegistry(runners)


def announce_isolation(sandbox: Sandbox) -> None:
    """Say at start who jobs run as; with the sandbox off, say it on every log line."""
    if sandbox.isolation is Isolation.NONE:
        add_static_field("isolation", "OFF")
        log.warning("runners.isolation is none: process jobs run WITHOUT a sandbox")
    if os.geteuid() == 0:
        user = sandbox.user
        if user is None:
            log.error("the agent runs as root and the job user %r does not exist: process jobs "
                      "are refused (jobs never run as root)", sandbox.job_user_name)
        else:
            log.warning("the agent runs as root; jobs run as the unprivileged user %s (uid %d), "
                        "never as root", user.name, user.uid)


def inference_runner(settings: Settings, telemetry: Sampler | None) -> Runner | None:
    """The LLM backend the operator chose, reading GPU figures from our telemetry."""
    s = settings.inference
    sampler = TelemetryGpuSampler(telemetry) if telemetry is not None else None
    if s.backend == "ollama":
        return OllamaRunner(
            s.url or DEFAULT_OLLAMA_URL, allow_pull=s.allow_pull, default_model=s.default_model,
            max_tokens_limit=s.max_tokens, keep_alive=s.keep_alive, gpu_sampler=sampler,
            refresh_interval_s=s.refresh_interval_s)
    if s.backend == "openai":
        return OpenAICompatRunner(
            s.url or DEFAULT_OPENAI_URL, default_model=s.default_model,
            max_tokens_limit=s.max_tokens, prompt_endpoint=s.prompt_endpoint,
            api_key=s.api_key.get_secret_value() if s.api_key else None, gpu_sampler=sampler,
            refresh_interval_s=s.refresh_interval_s)
    return None


def probe_gpus(settings: Settings) -> tuple[Sampler | None, tuple[GpuSlotSpec, ...]]:
    """Start NVML (or the SIMULATED devices) and read it once; the GPU slots come from that.
    Blocks while NVML starts: call it before the event loop runs."""
    g, slots = settings.gpu, settings.slots
    if slots.gpu == 0 and not g.simulate:
        return None, ()  # GPU work off: NVML is never started
    if g.simulate:
        add_static_field("gpus", "SIMULATED")  # every log line says so
    sampler: Sampler | None = None
    # Simulated devices follow the jobs the sampler tracks: idle while nothing runs.
    lost = lost_file(g.simulate_lost_file) if g.simulate_lost_file else None
    nvml = (simulated_nvml(g.simulate, load=lambda: sampler.workload if sampler else {},
                           lost=lost)
            if g.simulate else Nvml())
    sampler = Sampler(nvml, interval_s=g.sample_interval_s, history=g.history,
                      process_every=g.process_every)
    specs = gpu_slot_specs(sampler.sample_blocking(), slots.per_gpu)
    return sampler, specs if slots.gpu is None else specs[:slots.gpu]


class Host:
    """Runs an engine to completion and decides the process's exit code."""

    def __init__(self, engine: Engine, *, drain_grace_s: float,
                 control_socket: Path | None = None,
                 control_access: ControlAccess | None = None,
                 metrics_address: tuple[str, int] | None = None,
                 reload: Callable[[], Reloaded] | None = None,
                 detachable: bool = True,
                 fleet: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.engine = engine
        self.fleet = fleet  # the fleet's loops (docs/fleet.md), run beside the engine
        self.detachable = detachable  # False: losing the console's terminal stops the miner
        self.reload = reload  # reads the config again and applies what it can
        self.drain_grace_s = drain_grace_s
        self.control = (ControlServer(engine, control_socket, control_access)
                        if control_socket else None)
        self.metrics = MetricsServer(engine, *metrics_address) if metrics_address else None
        self.notifier = Notifier()  # systemd's NOTIFY_SOCKET, if any
        self.exit_code = ExitCode.OK
        self.reason: str | None = None  # why it stopped on its own (the key refused)
        self.hung_up = False  # the console's terminal went away; the engine ran on
        self._terms = 0

    def on_terminate(self) -> None:
        """First SIGTERM/SIGINT drains and exits; the second cancels running jobs."""
        self._terms += 1
        self.notifier.send("STOPPING=1", "STATUS=draining, then exiting")
        if self._terms == 1:
            log.info("termination signal: draining, then exiting (send it again to cancel "
                     "running jobs)")
            self.engine.drain(exit_when_drained=True, grace_s=self.drain_grace_s)
        else:
            log.warning("second termination signal: canceling running jobs and exiting")
            self.engine.stop(cancel_running=True)

    def on_reload(self) -> None:
        """SIGHUP: read the config again and apply what changes live. Never raises: a
        config that does not load is logged and the running one stays."""
        self.notifier.reloading()
        try:
            if self.reload is None:
                log.info("reload asked; this miner has no config to read again")
            else:
                outcome = self.reload()
                self.drain_grace_s = self.engine.core.tuning.drain_grace_s
                log.info("configuration reloaded: %s", outcome.summary(),
                         extra={"event_name": "config_reloaded",
                                "applied": list(outcome.applied),
                                "need_restart": list(outcome.need_restart)})
        except ConfigError as exc:
            log.error("configuration not reloaded, the running one stays: %s", exc,
                      extra={"event_name": "config_not_reloaded"})
        except Exception:  # a bug: said loudly, and the miner goes on
            log.exception("configuration not reloaded, the running one stays",
                          extra={"event_name": "config_not_reloaded"})
        self.notifier.send("READY=1", f"STATUS={status_line(self.engine.snapshot())}")

    def on_hangup(self, ui: object = None) -> None:
        """The console's terminal is gone: the console closes at once (``ui.hang_up()``)
        and the engine runs on. Later SIGHUPs change nothing."""
        if self.hung_up:
            return
        self.hung_up = True
        log.warning("the console's terminal is gone: the console closes and the miner runs "
                    "on without it (aitbc-miner attach shows it; SIGTERM drains and stops it)",
                    extra={"event_name": "console_detached"})
        detach_stdio()
        hang_up = getattr(ui, "hang_up", None)
        if callable(hang_up):
            hang_up()

    async def _watch_auth(self) -> None:
        async for event in self.engine.subscribe():
            if isinstance(event, AuthRefusedEvent):
                self.exit_code = ExitCode.AUTH
                self.reason = event.message or "the coordinator refused the miner key"
                self.engine.drain(exit_when_drained=True, grace_s=self.drain_grace_s)

    async def run(self, ui: Callable[[Engine], Awaitable[None]] | None = None,
                  signals: bool = True) -> ExitCode:
        """Run the engine (and ``ui`` beside it on the same loop) until both are done."""
        raise_open_files_limit()
        loop = asyncio.get_running_loop()
        installed = []
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT) if ui is None else (signal.SIGTERM,):
                loop.add_signal_handler(sig, self.on_terminate)
                installed.append(sig)
            if ui is None:  # headless; under the console SIGHUP means the terminal is gone
                loop.add_signal_handler(signal.SIGHUP, self.on_reload)
            else:
                loop.add_signal_handler(signal.SIGHUP, self.on_hangup, ui)
            installed.append(signal.SIGHUP)
        watcher = asyncio.create_task(self._watch_auth())
        systemd = asyncio.create_task(notify_systemd(self.engine, self.notifier))
        if self.control is not None:
            await self.control.start()
        if self.metrics is not None:
            await self.metrics.start()
        engine_task = asyncio.create_task(self.engine.run(), name="engine")
        fleet_task = (asyncio.create_task(self.fleet(), name="fleet")
                      if self.fleet is not None else None)
        try:
            if ui is not None:
                await ui(self.engine)
                if (self.hung_up or not terminal_present()) and self.detachable:
                    self.on_hangup()  # the console left a lost terminal: run on headless
                    if signals and signal.SIGINT not in installed:
                        loop.add_signal_handler(signal.SIGINT, self.on_terminate)
                        installed.append(signal.SIGINT)
                elif not engine_task.done():
                    self.engine.stop()
            await engine_task
        finally:
            if fleet_task is not None:
                fleet_task.cancel()
                with contextlib.suppress(BaseException):
                    await fleet_task
            watcher.cancel()
            systemd.cancel()
            self.notifier.close()
            if self.control is not None:
                await self.control.stop()
            if self.metrics is not None:
                await self.metrics.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)
        return self.exit_code


def terminal_present() -> bool:
    """Whether stdout is still a terminal (a hung-up tty, or /dev/null, is not)."""
    try:
        return os.isatty(1)
    except OSError:
        return False


def detach_stdio() -> None:
    """stdin, stdout and stderr to /dev/null: the terminal is gone, and reading or writing
    it would fail (or spin) from now on. Logs go to the log file already."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)


def control_socket_path(settings: Settings) -> Path:
    """The command socket; the read-only one, ``control.ro.sock``, lies beside it."""
    return (settings.control.socket_dir or settings.paths.effective_state_dir) / SOCKET_NAME


def control_access(settings: Settings) -> ControlAccess:
    c = settings.control
    return ControlAccess(operator_gid=c.operator_gid, viewer_gid=c.viewer_gid,
                         max_connections=c.max_connections)


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, so that viewers, jobs' pipes and the
    journal never run the agent out of descriptors at a distro's low default (1024).
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20  # fs.nr_open's default
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s",
                        soft, target, exc)
            return soft
        log.debug("open files limit raised from %d to %d", soft, target)
        return target
    return soft


def ensure_private_dir(path: Path) -> None:
    """State holds receipts that can name the miner key (2026-01 identity): owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
