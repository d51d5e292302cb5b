"""A job's process: how it starts (session, mask, limits) and how every way it ends is named."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.base import JobFailed

from .helpers import (
    BEHAVE,
    FAST_KILL,
    PY,
    Lines,
    behave,
    features_or_skip,
    host_features,
    make_ctx,
    processes_of,
    without_cgroups,
)


async def test_job_starts_in_its_own_session_with_an_empty_signal_mask(make_runner, tmp_path):
    # Given the agent's thread blocks a signal and ignores SIGPIPE (as Python does)
    runner = make_runner({"status": {"executable": "/usr/bin/cat",
                                     "fixed_args": ["/proc/self/status"]}})
    ctx = make_ctx(tmp_path)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    try:
        # When a job (not Python: it would ignore SIGPIPE itself) prints its own status
        output = await runner.run({"type": "cli", "command": "status"}, ctx)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    # Then nothing is blocked or ignored in it
    fields = dict(line.split(":\t", 1) for line in output.result["stdout"].splitlines()
                  if ":\t" in line)
    assert int(fields["SigBlk"], 16) == 0
    assert int(fields["SigIgn"], 16) == 0
    assert output.result["exit_code"] == 0 and output.metrics["exit_code"] == 0


async def test_job_gets_nice_ionice_rlimits_session_and_cgroup(make_runner, tmp_path):
    # Given an entry with its own limits
    runner = make_runner({"status": behave("status", limits={
        "nice": 7, "open_files": 99, "cpu_seconds": 50, "file_size_mb": 3,
        "ionice": "idle"})}, limits={"memory_mb": 300})
    # When it reports how it runs
    output = await runner.run({"type": "cli", "command": "status"}, make_ctx(tmp_path))
    seen = json.loads(output.result["stdout"])
    limits = {line[:26].strip(): line[26:].split() for line in seen["limits"].splitlines()[1:]}
    # Then each limit reached the process
    assert seen["nice"] == 7
    assert seen["ioprio"] >> 13 == 3  # IOPRIO_CLASS_IDLE
    assert limits["Max open files"][:2] == ["99", "99"]
    assert limits["Max cpu time"][:2] == ["50", "51"]
    assert limits["Max file size"][0] == str(3 << 20)
    assert limits["Max core file size"][0] == "0"
    # A session of its own: led by the job, or by bubblewrap's init inside its namespace
    assert (seen["session_leader"] and seen["group_leader"]) or seen["sid"] == 1
    # And it saw only the miner's environment, never the agent's
    assert seen["env"]["PATH"].startswith("/usr/local/sbin") and "VIRTUAL_ENV" not in seen["env"]
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert seen["cwd"].endswith("/work")
    # And it inherited no descriptor but its stdin, stdout and stderr (no agent pipes)
    assert [fd for fd, target in seen["fds"].items()
            if fd not in ("0", "1", "2") and not target.startswith("/proc/")] == []
    if "job-" in seen["cgroup"]:  # a cgroup host: the job is in its own group
        assert "aitbc-miner/job-" in seen["cgroup"] or "/job-" in seen["cgroup"]
    assert output.metrics["cpu_time_ms"] >= 0 and output.metrics["memory_peak_bytes"] > 0


async def test_nonzero_exit_is_e_exit_with_code_and_stderr_tail(make_runner, tmp_path):
    # Given a job that fails with code 3 after writing to stderr
    one_int = {"max_count": 1, "rules": [{"type": "int"}]}
    runner = make_runner({"fails": behave("fail", args=one_int)})
    # When it runs
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "fails", "args": ["3"]}, make_ctx(tmp_path))
    # Then the code says so, with the stderr tail, and metrics still come back
    assert caught.value.code is ErrorCode.E_EXIT
    assert caught.value.message.startswith("exited with code 3: ")
    assert "something went wrong on purpose" in caught.value.message
    assert caught.value.metrics["exit_code"] == 3


async def test_output_over_the_cap_is_e_output_limit(make_runner, tmp_path):
    # Given an output cap of 64 KiB
    runner = make_runner({"spam": behave("spam", limits={"output_bytes": 65536})})
    ctx = make_ctx(tmp_path)
    # When the job writes 10 MiB
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "spam", "args": [str(10 << 20)]}, ctx)
    # Then it is stopped and reported, and the log kept in the workspace is capped
    assert caught.value.code is ErrorCode.E_OUTPUT_LIMIT
    assert "limits.output_bytes" in caught.value.message
    assert (ctx.workspace / "stdout.log").stat().st_size <= (1 << 20) + 100
    assert processes_of(ctx.job_id) == []


FILE_WRITERS = {
    # Python ignores SIGXFSZ and fails the write with EFBIG ...
    "python": (behave("write", limits={"file_size_mb": 1}), ["big.bin", str(2 << 20)]),
    # ... dd does not, and is killed by the signal.
    "dd": ({"executable": "/usr/bin/dd", "limits": {"file_size_mb": 1},
            "fixed_args": ["if=/dev/zero", "of=out/big.bin", "bs=1048576", "count=2"]}, []),
}


@pytest.mark.parametrize("writer", list(FILE_WRITERS))
async def test_a_file_over_its_size_limit_is_e_output_limit(make_runner, tmp_path, writer):
    # Given a 1 MiB file-size limit
    entry, args = FILE_WRITERS[writer]
    runner = make_runner({"big": entry})
    # When the job writes a 2 MiB file
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "big", "args": args}, make_ctx(tmp_path))
    # Then it is reported against the file-size limit
    assert caught.value.code is ErrorCode.E_OUTPUT_LIMIT
    assert caught.value.message.startswith("limits.file_size_mb: wrote a file larger than 1 MiB")


async def test_log_lines_stream_to_the_console_and_land_in_the_workspace(make_runner, tmp_path):
    # Given a job that prints three lines
    runner = make_runner({"lines": behave("lines")})
    lines = Lines()
    ctx = make_ctx(tmp_path, lines=lines)
    # When it runs
    await runner.run({"type": "cli", "command": "lines", "args": ["3"]}, ctx)
    # Then each line was reported, and the workspace log has them
    assert lines.lines == ["line 0", "line 1", "line 2"]
    assert (ctx.workspace / "stdout.log").read_text() == "line 0\nline 1\nline 2\n"


async def test_cancel_escalates_sigint_sigterm_sigkill_with_the_configured_delays(
        make_runner, tmp_path):
    # Given a job that ignores SIGINT and SIGTERM, and delays of 0.3 s each
    runner = make_runner({"stubborn": behave("stubborn")})
    lines = Lines()
    ctx = make_ctx(tmp_path, lines=lines)
    task = asyncio.create_task(runner.run({"type": "cli", "command": "stubborn"}, ctx))
    await lines.wait_for("ready")
    # When it is canceled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Then it got SIGINT, SIGTERM 0.3 s later, then SIGKILL, and nothing of it is left
    events = [line.split() for line in lines.lines if line.startswith(("START", "SIG"))]
    names = [name for name, _ in events]
    assert names == ["START", "SIGINT", "SIGTERM"]
    gap = float(events[2][1]) - float(events[1][1])
    assert gap >= FAST_KILL["sigint_grace_s"] * 0.9
    assert processes_of(ctx.job_id) == []


async def test_a_job_that_exits_on_sigint_is_not_escalated(make_runner, tmp_path):
    # Given hour-long escalation delays and a job that dies on SIGINT (Python's default)
    runner = make_runner({"wait": behave("wait")},
                         kill={"sigint_grace_s": 3600, "sigterm_grace_s": 3600})
    lines = Lines()
    ctx = make_ctx(tmp_path, lines=lines)
    task = asyncio.create_task(runner.run({"type": "cli", "command": "wait"}, ctx))
    await lines.wait_for("ready")
    # When it is canceled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Then the cancel ended as soon as the job was gone (waiting out a delay would have
    # outlasted the test's timeout), and got no further signal
    assert not any(line.startswith("SIGTERM") for line in lines.lines)
    assert processes_of(ctx.job_id) == []


async def test_entry_time_limit_is_e_timeout(make_runner, tmp_path):
    # Given an entry allowed 0.5 s of wall-clock time
    runner = make_runner({"spin": behave("spin", limits={"timeout_s": 0.5})})
    ctx = make_ctx(tmp_path)
    # When the job spins forever
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "spin"}, ctx)
    # Then it is stopped as E_TIMEOUT naming the limit
    assert caught.value.code is ErrorCode.E_TIMEOUT
    assert caught.value.message == "limits.timeout_s: ran past 0.5s; stopped"
    assert processes_of(ctx.job_id) == []


async def test_cpu_spinner_is_stopped_by_its_cpu_seconds(make_runner, tmp_path):
    # Given one CPU second
    runner = make_runner({"spin": behave("spin", limits={"cpu_seconds": 1})})
    ctx = make_ctx(tmp_path)
    # When the job spins
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "spin"}, ctx)
    # Then the kernel stops it and the miner names the limit
    assert caught.value.code is ErrorCode.E_TIMEOUT
    assert "limits.cpu_seconds" in caught.value.message
    assert caught.value.metrics["cpu_time_ms"] >= 900
    assert processes_of(ctx.job_id) == []


async def test_memory_hog_is_e_oom_within_its_cgroup(make_runner, tmp_path):
    features_or_skip(cgroup=True)
    # Given a 64 MiB memory limit
    runner = make_runner({"hog": behave("hog", limits={"memory_mb": 64})})
    ctx = make_ctx(tmp_path)
    # When the job tries to hold 512 MiB
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "hog", "args": ["512"]}, ctx)
    # Then the kernel kills it inside its limit, and the peak stays near the limit
    assert caught.value.code is ErrorCode.E_OOM
    assert "limits.memory_mb: hit its memory limit of 64 MiB" in caught.value.message
    assert caught.value.metrics["memory_peak_bytes"] <= 70 << 20
    assert processes_of(ctx.job_id) == []


async def test_memory_hog_without_cgroups_is_e_oom_by_address_space(make_runner, tmp_path):
    from aitbc_miner.sandbox import Sandbox

    # Given a host without cgroups: the memory limit becomes RLIMIT_AS
    found = without_cgroups()
    runner = make_runner({"hog": behave("hog", network="host", limits={"memory_mb": 128})},
                         sandbox=Sandbox(found, **FAST_KILL))
    ctx = make_ctx(tmp_path)
    # When the job tries to hold 512 MiB
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "hog", "args": ["512"]}, ctx)
    # Then its allocation fails and the miner reports E_OOM, saying which limit
    assert caught.value.code is ErrorCode.E_OOM
    assert "address-space limit (128 MiB)" in caught.value.message
    assert caught.value.metrics["sandbox"] == "rlimits"


async def test_fork_bomb_is_bounded_by_pids_max_and_cleaned_up(make_runner, tmp_path):
    features_or_skip(cgroup=True)
    # Given at most 24 processes and 1.5 s
    runner = make_runner({"bomb": behave("forkbomb", limits={"processes": 24, "timeout_s": 1.5})})
    ctx = make_ctx(tmp_path)
    # When the job forks without end
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "bomb"}, ctx)
    # Then it never had more than 24 processes, was stopped, and none is left
    assert caught.value.code is ErrorCode.E_TIMEOUT
    if "pids_peak" in caught.value.metrics:
        assert caught.value.metrics["pids_peak"] <= 24
    assert processes_of(ctx.job_id) == []


@pytest.mark.parametrize("with_cgroup", [True, False], ids=["cgroup", "rlimits-only"])
async def test_double_forked_daemon_does_not_outlive_its_job(make_runner, tmp_path, with_cgroup):
    from aitbc_miner.sandbox import Sandbox

    if with_cgroup:
        features_or_skip(cgroup=True)
    # Given a job that double-forks a daemon (new session, ignores SIGINT/SIGTERM) and exits 0
    found = host_features() if with_cgroup else without_cgroups()
    runner = make_runner({"daemon": behave("daemon", network="host", args={
        "max_count": 2, "rules": [{"type": "path"}, {"type": "enum", "choices": ["go"]}]})},
        sandbox=Sandbox(found, **FAST_KILL))
    ctx = make_ctx(tmp_path)
    # When the job ends successfully
    output = await runner.run({"type": "cli", "command": "daemon", "args": ["daemon.pid", "go"]},
                              ctx)
    # Then the daemon it left behind (its pid file is in the job's work folder) is gone too
    assert output.result["exit_code"] == 0
    daemon_pid = int((ctx.workspace / "work" / "daemon.pid").read_text())
    assert daemon_pid > 0
    assert processes_of(ctx.job_id) == []


async def test_exec_failure_is_e_internal(make_runner, tmp_path):
    # Given an allowlisted file that is executable but no program
    fake = tmp_path / "bin" / "not-a-program"
    fake.parent.mkdir(mode=0o755)
    fake.write_bytes(b"\x00\x01garbage")
    fake.chmod(0o755)
    runner = make_runner({"broken": {"executable": str(fake)}})
    # When a job names it
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "broken"}, make_ctx(tmp_path))
    # Then the miner reports its own problem, not the job's
    assert caught.value.code is ErrorCode.E_INTERNAL
    assert caught.value.message.startswith("sandbox: could not start the executable: ")


async def test_a_launcher_that_cannot_start_fails_at_once(tmp_path):
    from aitbc_miner.sandbox import JobSpec, Limits, NetworkPolicy, Sandbox

    # Given hour-long escalation delays and a sandbox whose launcher cannot even be started
    sandbox = Sandbox(host_features(), sigint_grace_s=3600,
                      sigterm_grace_s=3600, python=str(tmp_path / "no-such-python"))
    spec = JobSpec("j", ["/usr/bin/true"], {}, tmp_path, tmp_path, Limits(),
                   network=NetworkPolicy.HOST)
    # When the start fails
    with pytest.raises(FileNotFoundError):
        await sandbox.run(spec)
    # Then it failed at once (the engine reports E_INTERNAL): waiting on signals would have
    # outlasted the test's timeout


async def test_without_cgroups_the_memory_cap_still_covers_the_whole_job(make_runner, tmp_path):
    from aitbc_miner.sandbox import Sandbox

    # Given no cgroups, a 256 MiB cap, and a job of four processes of 100 MiB each (each
    # one well under the cap, so no per-process limit stops them)
    hostile = str(Path(BEHAVE).with_name("hostile.py"))
    runner = make_runner({"memory": {
        "executable": PY, "fixed_args": ["-I", hostile, json.dumps(
            {"attack": "memory", "processes": 4, "mib_each": 100})],
        "read_only": [hostile], "limits": {"memory_mb": 256}}},
        sandbox=Sandbox(without_cgroups(), **FAST_KILL))
    ctx = make_ctx(tmp_path)
    # When it runs
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "memory"}, ctx)
    # Then the launcher's sum of the job's memory stops it, naming the limit
    assert caught.value.code is ErrorCode.E_OOM
    assert caught.value.message.startswith("limits.memory_mb: its processes together used ")
    assert processes_of(ctx.job_id) == []
