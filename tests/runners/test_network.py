"""Network egress per entry: ``none`` is loopback-only in its own namespace, ``host`` is not."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.base import JobFailed
from aitbc_miner.sandbox import Isolation, Sandbox

from .helpers import FAST_KILL, behave, features_or_skip, host_features, make_ctx

HOST_PORT = {"max_count": 2, "rules": [{"type": "enum", "choices": ["127.0.0.1"]},
                                       {"type": "int", "min": 1, "max": 65535}]}


async def test_none_job_cannot_reach_a_loopback_server_and_host_job_can(make_runner,
                                                                         tmp_path: Path):
    features_or_skip(netns=True)
    # Given a server on 127.0.0.1 outside any job
    greetings: asyncio.Queue[bytes] = asyncio.Queue()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greetings.put_nowait(await reader.readline())
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = str(server.sockets[0].getsockname()[1])
    runner = make_runner({"probe-none": behave("net", args=HOST_PORT, network="none"),
                          "probe-host": behave("net", args=HOST_PORT, network="host")})
    try:
        # When a `none` job and then a `host` job try to connect to it
        none = await runner.run({"type": "cli", "command": "probe-none",
                                 "args": ["127.0.0.1", port]}, make_ctx(tmp_path))
        host = await runner.run({"type": "cli", "command": "probe-host",
                                 "args": ["127.0.0.1", port]}, make_ctx(tmp_path))
        async with asyncio.timeout(10):
            first = await greetings.get()
    finally:
        server.close()
        await server.wait_closed()
    # Then only the `host` job got through; the `none` job found nothing listening
    assert json.loads(none.result["stdout"]) == {"connected": False,
                                                 "error": "ConnectionRefusedError"}
    assert json.loads(host.result["stdout"]) == {"connected": True}
    assert first == b"hello from the job\n" and greetings.empty()


async def test_none_job_is_refused_where_the_network_cannot_be_isolated(make_runner, tmp_path):
    # Given the sandbox turned off, on a host without network namespaces
    sandbox = Sandbox(replace(host_features(), netns=False), isolation=Isolation.NONE,
                      **FAST_KILL)
    runner = make_runner({"none": behave("echo", network="none"),
                          "host": behave("echo", network="host")},
                         sandbox=sandbox)
    # When a `none` job and a `host` job arrive
    with pytest.raises(JobFailed) as caught:
        await runner.run({"type": "cli", "command": "none", "args": ["hi"]}, make_ctx(tmp_path))
    host = await runner.run({"type": "cli", "command": "host", "args": ["hi"]}, make_ctx(tmp_path))
    # Then the `none` job is refused (never run with the host's network) and `host` runs
    assert caught.value.code is ErrorCode.E_DENY
    assert caught.value.message.startswith("network.none: could not isolate the job's network")
    assert host.result["stdout"] == "hi\n"
