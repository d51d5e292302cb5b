"""A Redis client for the fleet from the ``fleet:`` settings: one URL (AUTH/ACL user and
password in it, ``rediss://`` for TLS, all as redis-py reads them) or Sentinel.

Timeouts are short on purpose: a rig whose Redis is away must notice within seconds and
go on alone (docs/fleet.md); the fleet's loops retry, so the client does not.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from ..config.model import FleetSettings

SOCKET_TIMEOUT_S = 5.0  # one command's answer; blocking reads ask for less
CONNECT_TIMEOUT_S = 2.0


class SentinelMaster(Redis):
    """The master's client found through Sentinel; closing it also closes the sentinels'
    own connections (redis-py leaves those to the ``Sentinel`` object)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            sentinel: Sentinel | None = getattr(self.connection_pool, "sentinel_manager", None)
            if sentinel is not None:
                await sentinel.aclose()


def connect(settings: FleetSettings) -> Redis:
    """The client (no connection is made until the first command)."""
    if settings.redis_url is None:
        raise ValueError("fleet.redis_url is not set")
    url = settings.redis_url.get_secret_value()
    common: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S,
        # Bytes that are not UTF-8 (any client may write any key) read as U+FFFD, never
        # as an exception out of a read.
        # One retry: a pooled connection Redis dropped (a restart) is replaced at once;
        # a Redis that is down still fails fast (the second connect is refused too).
        "decode_responses": True, "encoding_errors": "replace", "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 15,
    }
    if not settings.sentinel:
        client: Redis = Redis.from_url(url, **common)
        return client
    # The URL as redis-py reads it (login, db, TLS and its ?ssl_ca_certs=... options) less
    # the address, which the sentinels give.
    url_options: dict[str, Any] = dict(parse_url(url))
    for name in ("host", "port", "path", "connection_class"):
        url_options.pop(name, None)
    if urlsplit(url).scheme == "rediss":
        url_options["ssl"] = True
    sentinels = [(host, int(port)) for host, _, port in
                 (item.rpartition(":") for item in settings.sentinel)]
    sentinel = Sentinel(sentinels, socket_timeout=SOCKET_TIMEOUT_S,  # type: ignore[no-untyped-call]
                        socket_connect_timeout=CONNECT_TIMEOUT_S)
    master: Redis = sentinel.master_for(settings.sentinel_service, redis_class=SentinelMaster,
                                         **{**common, **url_options})
    return master
