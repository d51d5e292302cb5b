"""A real redis-server (Debian's package) per test, on a free loopback port in a temp dir.

``redis_server`` yields a :class:`RedisServer`: ``url`` for clients, ``kill()`` (SIGKILL) and
``start()`` (same port, same dir) to take Redis away mid-test and bring it back, and
``acl_user(name, password, rules)`` to add an ACL user. Nothing is shared between tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The integration tests' fixture: every subprocess a test starts, killed and reaped at the end.
from tests.integration.conftest import procs  # noqa: F401, E402

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; its data (AOF) lives in ``dir`` so a restart keeps it."""

    def __init__(self, directory: Path, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--daemonize", "no", "--protected-mode", "no",
             "--logfile", str(self.dir / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # Readiness is the server answering PING on its port (no event to wait on across
        # processes; each try is a blocking connect with its own short timeout).
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not ready on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, clients see connection errors."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def cli(self, *args: str) -> str:
        """Run one command through redis-cli (for setup: ACL users and the like)."""
        cli = shutil.which("redis-cli")
        assert cli is not None
        out = subprocess.run([cli, "-p", str(self.port), *args], check=True,
                             capture_output=True, timeout=10)
        return out.stdout.decode().strip()

    def acl_user(self, name: str, password: str, rules: str) -> str:
        """Add an ACL user (``rules`` e.g. ``"~aitbc:fleet:* +@all"``); returns its URL."""
        self.cli("ACL", "SETUSER", name, "on", f">{password}", "resetkeys", *rules.split())
        return f"redis://{name}:{password}@127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A started redis-server on a free loopback port; stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type]:
    """For tests that start Redis later (or never): build ``RedisServer`` objects, all stopped
    at the end. Call ``make()`` for one not yet started (``.start()`` it when wanted)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    made: list[RedisServer] = []

    class Factory:
        @staticmethod
        def make(extra: tuple[str, ...] = ()) -> RedisServer:
            server = RedisServer(tmp_path_factory.mktemp("redis"), extra=extra)
            made.append(server)
            return server

    try:
        yield Factory
    finally:
        for server in made:
            server.stop()
