"""The fleet's ways to Redis besides a plain URL, against real servers (Debian's
redis-server): TLS (``rediss://`` with the CA given in the URL, as redis-py reads it) and
Sentinel (``fleet.sentinel``, redis-py's own Sentinel client). A rig joins through each and
writes its heartbeat; the fleet view reads it. A server whose certificate the CA does not
vouch for is refused with one line, by the rig and by ``aitbc-miner fleet``."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aitbc_miner.config.model import FleetSettings
from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.fleet.connect import connect
from aitbc_miner.fleet.view import read_fleet

from . import test_view_cli
from .conftest import REDIS_SERVER, RedisServer, free_port
from .test_rig import FLEET, KEYS, Rig, wait_for
from .test_view_cli import Run

fleet_cli = test_view_cli.fleet_cli  # the fixture: ``aitbc-miner fleet`` as a process
SERVICE = "mymaster"
READY_S = 15.0  # bound on waiting for a server that has started to answer
#: How a redis-server built without TLS refuses ``tls-port`` (in its log, lower-cased).
NO_TLS_BUILD = ("not supported", "not compiled", "bad directive", "unsupported")


# --- a throwaway CA and a server certificate for 127.0.0.1 -----------------------


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(directory: Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> Pem:
    pem = Pem(directory / f"{stem}.pem", directory / f"{stem}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pem


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
           signer: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_ca(directory: Path, stem: str) -> tuple[Pem, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _write(directory, stem, _issue(stem, key, stem, key, ca=True), key), key


def server_cert(directory: Path, ca: Pem, ca_key: ec.EllipticCurvePrivateKey) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca.cert.stem
    return _write(directory, "server", _issue("127.0.0.1", key, issuer, ca_key, ca=False), key)


# --- servers ------------------------------------------------------------------


@dataclass(frozen=True)
class TlsRedis:
    server: RedisServer
    port: int  # the TLS port (the plain one is off)
    ca: Pem
    other_ca: Pem  # a CA that did not sign the server's certificate
    cert: Pem  # the server's certificate and key (the sentinel shows it as its own)

    def url(self, ca: Pem) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca.cert}"


@pytest.fixture
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    certs = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca(certs, "fleet-ca")
    other, _ = make_ca(certs, "other-ca")
    cert = server_cert(certs, ca, ca_key)
    port = free_port()
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), extra=(
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert.cert),
        "--tls-key-file", str(cert.key), "--tls-ca-cert-file", str(ca.cert),
        "--tls-auth-clients", "no"))
    try:
        _start_tls(server, port, ca)
        yield TlsRedis(server, port, ca, other, cert)
    finally:
        server.stop()


def _start_tls(server: RedisServer, port: int, ca: Pem) -> None:
    """Start it; ready once a TLS client's PING is answered. A build without TLS says so in
    its log and exits: the test is skipped, naming the reason."""
    assert REDIS_SERVER is not None
    log = server.dir / "redis.log"
    server.process = subprocess.Popen(
        [REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(server.dir), "--save", "",
         "--daemonize", "no", "--protected-mode", "no", "--logfile", str(log), *server.extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca.cert),
                         socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + READY_S
    try:
        while True:
            if server.process.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                said = text.lower()
                if "tls" in said and any(word in said for word in NO_TLS_BUILD):
                    pytest.skip("this redis-server was built without TLS support "
                                "(tls-port refused); Debian's package has it")
                raise RuntimeError(f"redis-server (TLS) exited: {text[-2000:]}")
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering TLS on port {port}")
            time.sleep(0.05)
    finally:
        client.close()


@contextmanager
def running_sentinel(directory: Path, master_port: int, conf: str = "") -> Iterator[int]:
    """One sentinel (redis-server in sentinel mode) watching 127.0.0.1:``master_port`` as
    ``mymaster`` (``conf``: more lines of its config); yields its port once it names that
    master."""
    assert REDIS_SERVER is not None
    port = free_port()
    path = directory / "sentinel.conf"  # the sentinel rewrites it: a writable file
    path.write_text(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
                    f"logfile {directory / 'sentinel.log'}\n{conf}"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n",
                    encoding="utf-8")
    process = subprocess.Popen([REDIS_SERVER, str(path), "--sentinel"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True,
                         socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        deadline = time.monotonic() + READY_S
        while True:  # no event across processes: ask until it names the master
            assert process.poll() is None, (directory / "sentinel.log").read_text()
            try:
                if client.sentinel_get_master_addr_by_name(SERVICE) == (
                        "127.0.0.1", master_port):
                    break
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            assert time.monotonic() < deadline, "the sentinel never named its master"
            time.sleep(0.05)
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


# --- the tests -------------------------------------------------------------------


async def heartbeat_read(url: str, rig: str, settings: FleetSettings | None = None) -> None:
    """Wait until the fleet view, connecting as ``settings`` (or to ``url``), reads ``rig``'s
    heartbeat with a live lease."""
    view = connect(settings or FleetSettings(redis_url=url, name=FLEET))

    async def seen() -> bool:
        found = (await read_fleet(view, FLEET)).rig(rig)
        return found is not None and found.reported and not found.lease_expired \
            and found.state == "running"

    try:
        await wait_for(seen, f"{rig}'s heartbeat read by the fleet view")
    finally:
        await view.aclose()


async def joined(rig: Rig) -> None:
    """Wait (bounded) for the rig to join; a failure names the rig's last fleet status."""
    try:
        async with asyncio.timeout(30):
            await rig.engine.wait_until(lambda s: s.fleet.state == "joined")
    except TimeoutError:
        raise AssertionError(f"never joined: {rig.engine.snapshot().fleet}") from None


async def test_a_rig_joins_over_tls_and_the_view_reads_it(
        tmp_path: Path, tls_redis: TlsRedis, fleet_cli: Run) -> None:
    # Given a Redis that speaks TLS only, and the CA that signed its certificate in the URL
    url = tls_redis.url(tls_redis.ca)
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        rig = Rig(tmp_path, devnet, "rig-a", KEYS[0], url)
        try:
            # When the rig starts, Then it joins and its heartbeat is read over TLS
            await joined(rig)
            await heartbeat_read(url, "rig-a")
            # And `aitbc-miner fleet` (a process, the same URL) lists it
            done = fleet_cli("--format", "json", "--history", "0", "--redis-url", url,
                             "--fleet", FLEET)
            assert done.returncode == 0, done.stderr
            assert [r["rig"] for r in json.loads(done.stdout)["rigs"]] == ["rig-a"]
        finally:
            await rig.stop()


async def test_a_certificate_from_another_ca_is_refused_in_one_line(
        tmp_path: Path, tls_redis: TlsRedis, fleet_cli: Run) -> None:
    # Given a CA in the URL that did not sign the server's certificate
    url = tls_redis.url(tls_redis.other_ca)
    refused = "Redis unreachable: its TLS certificate is not trusted ("
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        rig = Rig(tmp_path, devnet, "rig-a", KEYS[0], url)
        try:
            # Then the rig works alone, and its snapshot says why in one line
            await rig.engine.wait_until(lambda s: s.fleet.state == "unreachable"
                                        and (s.fleet.message or "").startswith(refused))
            message = rig.engine.snapshot().fleet.message or ""
            assert "\n" not in message and not rig.fleet.up
            assert not rig.fleet.up and not rig.engine.snapshot().fleet.state == "joined"
        finally:
            await rig.stop()
    # And `aitbc-miner fleet` exits 1 with one line, no traceback
    done = fleet_cli("--format", "json", "--redis-url", url, "--fleet", FLEET)
    assert done.returncode == 1, done
    assert done.stderr.startswith(f"aitbc-miner fleet: fleet: {refused}")
    assert done.stderr.endswith(f") (127.0.0.1:{tls_redis.port})\n")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    # While the right CA, on the same server, is let in (the refusal is the CA's doing)
    view = connect(FleetSettings(redis_url=tls_redis.url(tls_redis.ca), name=FLEET))
    try:
        assert (await read_fleet(view, FLEET)).rigs == ()
    finally:
        await view.aclose()


async def join_through_sentinel(tmp_path: Path, sentinel: int, url: str) -> None:
    """A rig whose settings name only ``sentinel`` joins, and the fleet view (through the
    sentinel too) reads its heartbeat. ``url``'s own address answers nothing: with sentinel
    set, only its login, db and options count."""
    settings = FleetSettings(
        redis_url=url, sentinel=[f"127.0.0.1:{sentinel}"], sentinel_service=SERVICE,
        name=FLEET, rig_id="rig-s", lease_s=2.0)
    async with Devnet(Dialect.V2026_08, rate_limits=False, miner_keys=KEYS) as devnet:
        rig = Rig(tmp_path, devnet, "rig-s", KEYS[0], "", settings=settings)
        try:
            await joined(rig)
            await heartbeat_read("", "rig-s", settings)
        finally:
            await rig.stop()


async def test_a_rig_finds_its_master_through_sentinel(
        tmp_path: Path, redis_server: RedisServer) -> None:
    with running_sentinel(tmp_path, redis_server.port) as sentinel:
        await join_through_sentinel(tmp_path, sentinel, "redis://127.0.0.1:1/0")
    # And it was written on the master the sentinel named
    master = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    try:
        assert master.hget(f"aitbc:fleet:{FLEET}:rig:rig-s", "state") == "running"
        assert master.zscore(f"aitbc:fleet:{FLEET}:rigs", "rig-s") is not None
    finally:
        master.close()


async def test_sentinel_with_a_tls_master_uses_the_urls_tls_options(
        tmp_path: Path, tls_redis: TlsRedis) -> None:
    # Given a TLS-only master, a sentinel that watches it over TLS, and the CA given in the
    # URL's query (as redis-py reads it): the master's connections get it too
    tls = (f"tls-cert-file {tls_redis.cert.cert}\ntls-key-file {tls_redis.cert.key}\n"
           f"tls-ca-cert-file {tls_redis.ca.cert}\ntls-replication yes\n")
    with running_sentinel(tmp_path, tls_redis.port, tls) as sentinel:
        await join_through_sentinel(
            tmp_path, sentinel, f"rediss://127.0.0.1:1/0?ssl_ca_certs={tls_redis.ca.cert}")
