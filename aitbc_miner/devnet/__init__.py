"""The reference AITBC coordinator ("devnet"): both released wire dialects, quirks kept.

It serves the spec's miner and client routes over real loopback HTTP, persists state in
sqlite, signs receipts with Ed25519, rate-limits like 2026-08, and can be told to fail in
the ways a real network does (``faults``), in-process or via ``/_devnet`` admin routes.
"""

from ..protocol import Dialect
from .auth import client_headers, miner_headers
from .clock import FakeClock, SystemClock
from .faults import Fault
from .server import DEFAULT_CLIENT_KEY, DEFAULT_MINER_KEYS, Devnet
from .tokens import DEFAULT_JWT_SECRET, make_jwt

__all__ = [
    "DEFAULT_CLIENT_KEY",
    "DEFAULT_JWT_SECRET",
    "DEFAULT_MINER_KEYS",
    "Devnet",
    "Dialect",
    "FakeClock",
    "Fault",
    "SystemClock",
    "client_headers",
    "make_jwt",
    "miner_headers",
]
