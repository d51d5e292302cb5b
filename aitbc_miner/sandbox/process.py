"""Run one job process in the sandbox and see it through to the end, whatever happens.

``Sandbox.run`` starts the launcher (``launch.py``), hands it the spec over a pipe,
captures output, and returns a ``Finished``. It stops the job itself when the output cap
or the job's own time limit is hit; when the engine cancels it (operator cancel or the
engine's timeout), the kill escalation runs to completion, shielded, before the
``CancelledError`` goes on. Escalation: SIGINT to the job's process group, SIGTERM after
``sigint_grace_s`` (7.5 s), SIGKILL after ``sigterm_grace_s`` (2.5 s) more. When the main
process is gone the launcher kills and reaps every descendant, and the agent empties the
job's cgroup, so nothing the job started outlives it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .cgroups import CgroupMode, JobCgroup
from .features import LAUNCHER, LAUNCHER_ENV, SandboxFeatures, host_features
from .isolation import (
    SECRETS_MOUNT,
    Isolation,
    JobUser,
    bwrap_args,
    find_bwrap,
    gpu_nodes,
    job_user,
)
from .limits import MIB, Limits, NetworkPolicy
from .outcome import Finished, StopReason
from .output import LineSink, OutputBudget, StreamCapture
from .secrets import SecretsDir

log = logging.getLogger(__name__)

SIGINT_GRACE_S = 7.5  # the GitHub Actions escalation: time to exit after SIGINT ...
SIGTERM_GRACE_S = 2.5  # ... and after SIGTERM, before SIGKILL
LAUNCHER_EXIT_S = 30.0  # after SIGKILL, how long the launcher may take to reap and sweep
DRAIN_S = 5.0  # after the launcher exits, how long to wait for the last output bytes
IOPRIO_CLASS = {"best-effort": 2, "idle": 3}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One process to run: an argv (no shell), its environment, folders and limits."""

    job_id: str
    argv: list[str]  # argv[0] is the absolute executable
    env: Mapping[str, str]
    cwd: Path
    workspace: Path  # the job's folder: stdout.log, stderr.log and secrets/ go here
    limits: Limits
    network: NetworkPolicy = NetworkPolicy.NONE
    stdin: Path | None = None
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    gpu: bool = False
    gpu_index: str | None = None  # which GPU's device nodes the job may open
    executable_fd: int | None = None  # the checked file: runs by descriptor, not by path
    ro_paths: tuple[Path, ...] = ()  # more the job may read, at their own paths
    ro_files: Mapping[str, Path] = field(default_factory=dict)  # sandbox path -> host file


class Sandbox:
    """Starts job processes; one instance serves every job of a runner."""

    def __init__(self, features: SandboxFeatures | None = None, *,
                 sigint_grace_s: float = SIGINT_GRACE_S, sigterm_grace_s: float = SIGTERM_GRACE_S,
                 python: str = sys.executable, isolation: Isolation = Isolation.BWRAP,
                 job_user: str = "aitbc-job", dev: Path = Path("/dev")) -> None:
        self._features = features
        self.sigint_grace_s = sigint_grace_s
        self.sigterm_grace_s = sigterm_grace_s
        self.python = python
        self.isolation = isolation
        self.job_user_name = job_user
        self.dev = dev
        self.bwrap = find_bwrap()
        self._noticed = False

    @functools.cached_property
    def user(self) -> JobUser | None:
        """Who jobs run as when the agent is root (None: as the agent's own user). Looked up
        once, like the probe that ran as this user, not on every job start."""
        return job_user(self.job_user_name) if os.geteuid() == 0 else None

    @property
    def features(self) -> SandboxFeatures:
        """The host's isolation (probed on first use; blocking, so ``run`` probes in a thread)."""
        if self._features is None:
            self._features = host_features(self.bwrap, self.user)
        return self._features

    async def prepare(self) -> None:
        """Probe the host off the event loop, so ``unavailable`` never blocks it."""
        if self._features is None:
            self._features = await asyncio.to_thread(host_features, self.bwrap, self.user)

    def warnings(self) -> list[str]:
        """What every screen and log must say about how jobs are (not) contained."""
        if self.isolation is Isolation.NONE:
            return ["ISOLATION OFF: process jobs run without a sandbox (runners.isolation: none)"]
        if self._features is not None and (problem := self.unavailable()):
            return [f"process jobs refused: {problem}"]
        return []

    def unavailable(self) -> str | None:
        """Why no process job can run here, or None. Never true for ``isolation: none``
        unless the agent is root without a job user: jobs never run as root."""
        if os.geteuid() == 0 and self.user is None:
            return (f"the agent runs as root and the job user {self.job_user_name!r} does not "
                    "exist (or is root); jobs never run as root")
        if self.isolation is Isolation.BWRAP and not self.features.bwrap:
            return f"bubblewrap cannot build a sandbox here: {self.features.bwrap_error}"
        return None

    async def run(self, spec: JobSpec, on_line: LineSink | None = None,
                  on_started: Callable[[int], None] | None = None) -> Finished:
        """Run ``spec`` to its end. Raises ``CancelledError`` (after the kill) when canceled.
        ``on_started`` gets the job's main pid once it runs."""
        await self.prepare()
        features = self.features
        if problem := self.unavailable():
            return _not_started(spec, "sandbox", problem)
        isolated = self.isolation is Isolation.BWRAP
        if not isolated and spec.network is NetworkPolicy.NONE and not features.netns:
            return _not_started(spec, "network", "this host has no network namespaces")
        try:
            cgroup = self._cgroup(spec)
        except OSError as exc:
            return _not_started(spec, "cgroup", f"cannot create the job's cgroup: {exc}")
        job = _Job(spec, cgroup, on_started)
        secrets: SecretsDir | None = None
        try:
            user = self.user
            if not isolated and user is not None:
                await asyncio.to_thread(_hand_over, spec, user)
            if spec.secrets and not isolated:
                secrets = SecretsDir.create(spec.secrets, private_tmpfs=features.private_tmpfs,
                                            mount_point=spec.workspace / "secrets", owner=user)
            launch = self._launch_spec(spec, cgroup, secrets)
            await job.start(self.python, launch, on_line)
            stopped = await job.wait_main(spec.limits.timeout_s)
            if stopped is not None or not job.main_gone():
                await self._escalate(job)
            return await job.finish(stopped)
        except asyncio.CancelledError:
            await _uncancellable(self._escalate(job))
            raise
        finally:
            await _uncancellable(job.cleanup())
            if secrets is not None:
                secrets.remove()

    def _cgroup(self, spec: JobSpec) -> JobCgroup | None:
        host = self.features.cgroups
        if host.mode is CgroupMode.NONE:
            if not self._noticed:
                self._noticed = True
                log.warning("cgroups are not usable here (%s); jobs are limited by rlimits only: "
                            "no per-job memory cap or fork-bomb bound across processes",
                            host.reason)
            return None
        return host.create(spec.job_id, spec.limits)

    def _launch_spec(self, spec: JobSpec, cgroup: JobCgroup | None,
                     secrets: SecretsDir | None) -> dict[str, Any]:
        lim = spec.limits
        env = dict(spec.env)
        if secrets is not None:
            env["AITBC_SECRETS_DIR"] = str(secrets.path)
        extra: dict[str, Any] = {}
        if self.isolation is Isolation.BWRAP:
            extra = self._bwrap_spec(spec)
            if spec.secrets:
                env["AITBC_SECRETS_DIR"] = SECRETS_MOUNT
        user = self.user
        if user is not None:
            extra["user"] = [user.uid, user.gid]
        if spec.executable_fd is not None:
            extra.setdefault("executable_fd", spec.executable_fd)
        if cgroup is None and lim.memory_mb is not None:
            extra["memory_watch"] = lim.memory_mb * MIB  # the whole job, not each process
        elif cgroup is not None and lim.memory_mb is not None:
            extra["oom_watch"] = cgroup.oom_file()  # one OOM kill ends the whole job
        rlimits: dict[str, Any] = {"NOFILE": lim.open_files, "CORE": 0}
        memory = lim.rlimit_memory_mb(cgroup_memory=cgroup is not None, gpu=spec.gpu)
        if memory is not None:
            rlimits["AS"] = memory * MIB
        if lim.cpu_seconds is not None:  # soft: SIGXCPU; hard one second later: SIGKILL
            rlimits["CPU"] = [lim.cpu_seconds, lim.cpu_seconds + 1]
        if lim.file_size_mb is not None:
            rlimits["FSIZE"] = lim.file_size_mb * MIB
        if cgroup is None and os.geteuid() != 0:  # per user, so only a stand-in for pids.max
            rlimits["NPROC"] = lim.processes
        return {
            "agent_pid": os.getpid(), "executable": spec.argv[0], "argv": list(spec.argv),
            "env": env, "cwd": str(spec.cwd), "stdin": str(spec.stdin) if spec.stdin else None,
            "network": spec.network.value, "rlimits": rlimits, "nice": lim.nice,
            "ioprio": ([IOPRIO_CLASS[lim.ionice], lim.ionice_level] if lim.ionice != "none"
                       else None),
            "cgroup_procs": cgroup.procs_files if cgroup is not None else [],
            **(secrets.spec_fields() if secrets is not None else {}), **extra,
        }

    def _bwrap_spec(self, spec: JobSpec) -> dict[str, Any]:
        args, opened = bwrap_args(
            work=spec.cwd, network=spec.network, ro_paths=spec.ro_paths, ro_files=spec.ro_files,
            executable=Path(spec.argv[0]) if spec.executable_fd is not None else None,
            secrets=bool(spec.secrets), gpu_devices=gpu_nodes(spec.gpu_index, self.dev))
        found: dict[str, Any] = {
            "bwrap": args, "bwrap_path": self.bwrap, "open": opened,
            "workspace_fs": {"path": str(spec.cwd), "size": spec.limits.disk_mb * MIB,
                             "dirs": ["out", "tmp"], "skip": ["tmp"]}}
        if spec.secrets:
            found["secrets"] = {k: base64.b64encode(v).decode() for k, v in spec.secrets.items()}
        return found

    async def _escalate(self, job: _Job) -> None:
        """SIGINT, wait, SIGTERM, wait, SIGKILL; stop early once the main process is gone."""
        for sig, grace in ((signal.SIGINT, self.sigint_grace_s),
                           (signal.SIGTERM, self.sigterm_grace_s)):
            if job.main_gone():
                return
            job.signal(sig)
            if await job.wait_gone(grace):
                return
        job.signal(signal.SIGKILL)


def _hand_over(spec: JobSpec, user: JobUser) -> None:
    """Without a sandbox, a root agent's job user must reach its own folders: they become
    its own, and its workspace may be passed through (not listed) by others."""
    spec.workspace.chmod(0o711)
    for folder in (spec.cwd, *(p for p in spec.cwd.iterdir() if p.is_dir())):
        os.chown(folder, user.uid, user.gid)


def _not_started(spec: JobSpec, stage: str, error: str) -> Finished:
    return Finished(None, None, spec.limits, setup_stage=stage, setup_error=error)


class _Job:
    """The agent's view of one launcher and the job under it.

    Output pipes are plain pipes read through our own transports, not asyncio's
    subprocess pipes: ``Process.wait()`` would otherwise wait for every holder of the
    job's stdout, and a process that escaped the launcher could hold it forever.
    """

    def __init__(self, spec: JobSpec, cgroup: JobCgroup | None,
                 on_started: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.cgroup = cgroup
        self.on_started = on_started
        self.proc: asyncio.subprocess.Process | None = None
        self.control: asyncio.WriteTransport | None = None
        self.pid: int | None = None
        self.events: dict[str, dict[str, Any]] = {}
        self.exited = asyncio.Event()  # the main process is reaped (or the launcher is gone)
        self.launcher_done = asyncio.Event()  # the status pipe closed: the launcher exited
        self.budget = OutputBudget(spec.limits.output_bytes)
        self.status_task: asyncio.Task[None] | None = None
        self.pumps: list[asyncio.Task[None]] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.captures: list[StreamCapture] = []

    async def start(self, python: str, launch: dict[str, Any], on_line: LineSink | None) -> None:
        loop = asyncio.get_running_loop()
        (control_r, control_w), (status_r, status_w) = os.pipe(), os.pipe()
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        exe = self.spec.executable_fd
        passed = (status_w,) if exe is None else (status_w, exe)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                python, "-I", "-S", str(LAUNCHER), str(status_w), stdin=control_r,
                stdout=out_w, stderr=err_w, pass_fds=passed, env=LAUNCHER_ENV,
                cwd=str(self.spec.cwd))
        except BaseException:
            for fd in (control_w, status_r, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (control_r, status_w, out_w, err_w):
                os.close(fd)
        self.control, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(control_w, "wb", buffering=0))
        self.transports.append(self.control)
        self.control.write(json.dumps(launch).encode() + b"\n")
        lim, folder = self.spec.limits, self.spec.workspace
        out = StreamCapture("stdout", folder / "stdout.log", lim.log_bytes, self.budget, on_line,
                            keep=True)
        err = StreamCapture("stderr", folder / "stderr.log", lim.log_bytes, self.budget, on_line,
                            keep=False)
        self.captures = [out, err]
        self.status_task = asyncio.create_task(self._read_status(await self._reader(status_r)))
        self.pumps = [asyncio.create_task(out.pump(await self._reader(out_r))),
                      asyncio.create_task(err.pump(await self._reader(err_r)))]

    async def _reader(self, fd: int) -> asyncio.StreamReader:
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
        self.transports.append(transport)
        return reader

    async def _read_status(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                event = json.loads(line)
                self.events[event["event"]] = event
                if event["event"] == "started":
                    self.pid = int(event["pid"])
                    if self.on_started is not None:
                        self.on_started(self.pid)
                elif event["event"] == "exited":
                    self.exited.set()
        finally:  # the launcher is gone, whatever it managed to say
            self.exited.set()
            self.launcher_done.set()

    def main_gone(self) -> bool:
        """True once the main process is reaped, or if no launcher was ever started."""
        return self.proc is None or self.exited.is_set()

    async def wait_gone(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.exited.wait()
            return True
        except TimeoutError:
            return False

    async def wait_main(self, timeout_s: float | None) -> StopReason | None:
        """Wait for the main process to exit, the output cap, or the job's own time limit."""
        exited = asyncio.create_task(self.exited.wait())
        over = asyncio.create_task(self.budget.exceeded.wait())
        try:
            done, _ = await asyncio.wait({exited, over}, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            over.cancel()
        if self.budget.exceeded.is_set():
            return StopReason.OUTPUT_LIMIT
        return None if done else StopReason.TIMEOUT

    def signal(self, sig: int) -> None:
        """Ask the launcher to signal the job's process group; do it ourselves if it is gone."""
        if self.control is not None and not self.control.is_closing():
            self.control.write(f"signal {int(sig)}\n".encode())
            return
        if self.pid is not None:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    async def finish(self, stopped: StopReason | None) -> Finished:
        """Collect the outcome once the launcher has reaped and swept everything."""
        await self._launcher_exit()
        oom = self.cgroup.oom_kills() if self.cgroup else 0
        done = self.events.get("done", {})
        metrics = self._metrics()
        await self._empty_cgroup()
        if await self._drain():
            await asyncio.gather(*self.pumps)  # a capture error surfaces (E_INTERNAL)
        exited = self.events.get("exited", {})
        status = exited.get("status")
        setup = self.events.get("setup_error")
        code = sig = None
        if status is not None:
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
            else:
                code = os.waitstatus_to_exitcode(status)
                metrics["exit_code"] = code
        elif setup is None:
            setup = {"stage": "launcher", "error": "the launcher ended without a report "
                     f"(exit {self.proc.returncode if self.proc else None})"}
        out, err = self.captures
        metrics["output_bytes"] = self.budget.used
        return Finished(
            exit_code=code, signal=sig, limits=self.spec.limits, stopped=stopped,
            setup_stage=setup["stage"] if setup else None,
            setup_error=setup["error"] if setup else None, oom_kills=oom,
            memory_by_cgroup=self.cgroup is not None and self.spec.limits.memory_mb is not None,
            memory_sampled_over=int(done.get("memory_over") or 0),
            disk_full=done.get("disk_full") is True, copy_error=done.get("copy_error"),
            executable_fd=self.spec.executable_fd,
            stdout=bytes(out.kept), stderr_tail=err.tail, metrics=metrics)

    def _metrics(self) -> dict[str, Any]:
        done = self.events.get("done") or self.events.get("exited") or {}
        usage = done.get("rusage", {})
        metrics: dict[str, Any] = {
            "cpu_time_ms": int(usage.get("cpu_s", 0) * 1000),
            "memory_peak_bytes": int(usage.get("maxrss_kib", 0)) * 1024,
        }
        if self.cgroup is not None:
            metrics.update(self.cgroup.metrics())
        elif done.get("memory_sampled_peak"):
            metrics["memory_peak_bytes"] = int(done["memory_sampled_peak"])
        if "disk_used" in done:
            metrics["disk_used_bytes"] = int(done["disk_used"])
        metrics["sandbox"] = self.cgroup.mode.value if self.cgroup else "rlimits"
        return metrics

    async def _launcher_exit(self) -> None:
        if self.proc is None:
            return
        try:
            async with asyncio.timeout(LAUNCHER_EXIT_S):
                await self.launcher_done.wait()
                await self.proc.wait()
            return
        except TimeoutError:
            log.error("launcher of job %s did not exit %ss after the job; killing it",
                      self.spec.job_id, LAUNCHER_EXIT_S)
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def _empty_cgroup(self) -> None:
        if self.cgroup is not None:
            killed = await self.cgroup.destroy()
            if killed:
                log.warning("job %s: killed %d process(es) left in its cgroup",
                            self.spec.job_id, killed)

    async def _drain(self) -> bool:
        """Read the last output; False if some process still holds the pipes open."""
        try:
            async with asyncio.timeout(DRAIN_S):
                await asyncio.wait(self.pumps)
            return True
        except TimeoutError:
            log.warning("job %s: output pipes still open after it ended (a process escaped "
                        "the sandbox); closing them", self.spec.job_id)
            return False

    async def cleanup(self) -> None:
        """Make sure nothing of the job is left: launcher, cgroup, pipes, reader tasks."""
        await self._launcher_exit()
        await self._empty_cgroup()
        if self.pumps:
            await self._drain()
        for task in [*self.pumps, *([self.status_task] if self.status_task else [])]:
            task.cancel()
        for transport in self.transports:
            transport.close()
        await asyncio.gather(*self.pumps, *([self.status_task] if self.status_task else []),
                             return_exceptions=True)


async def _uncancellable(work: Awaitable[T]) -> T:
    """Await ``work`` to the end even if we are canceled meanwhile, then re-raise that."""
    task = asyncio.ensure_future(work)
    canceled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            canceled = True
            continue
        if canceled:
            raise asyncio.CancelledError
        return result
