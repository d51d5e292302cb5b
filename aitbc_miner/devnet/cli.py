"""``aitbc-miner devnet`` / ``python -m aitbc_miner.devnet``: run the reference coordinator.

Prints one JSON line when it is listening (``{"event": "ready", "url": ..., "port": ...,
"public_key_id": ...}``) so a test can start it with ``--port 0`` and read the port. It
exits 0 on SIGTERM/SIGINT; after a SIGKILL, restarting with the same ``--state`` (and
``--signing-key-file``) brings back its miners, jobs, receipts, key and port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from ..protocol import Dialect
from .feeder import Feeder
from .keys import load_or_create_key_file
from .server import DEFAULT_CLIENT_KEY, DEFAULT_MINER_KEYS, Devnet
from .tokens import DEFAULT_JWT_SECRET


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aitbc-miner devnet", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18000,
                   help="0 picks a free port (or the state's last one)")
    p.add_argument("--dialect", choices=[d.value for d in Dialect], default=Dialect.V2026_01.value)
    p.add_argument("--state", metavar="PATH", help="sqlite file; in-memory when absent")
    p.add_argument("--miner-key", action="append", dest="miner_keys", metavar="K",
                   help="repeatable")
    p.add_argument("--client-key", default=DEFAULT_CLIENT_KEY, metavar="K")
    p.add_argument("--jwt-secret", default=DEFAULT_JWT_SECRET,
                   help="HS256 secret for 2026-08 tokens")
    p.add_argument(
        "--signing-key-file", metavar="PATH",
        help="Ed25519 key, hex or raw 32 bytes; created if missing",
    )
    p.add_argument("--no-receipt-signing", action="store_true",
                   help="answer /result with receipt null")
    p.add_argument("--no-rate-limits", action="store_true")
    p.add_argument(
        "--rate-limit-scale", type=float, default=1.0, help="multiply the 2026-08 per-minute limits"
    )
    p.add_argument("--feed", type=int, default=0, metavar="N", help="keep N demo jobs queued")
    p.add_argument("--feed-seed", type=int, default=0)
    p.add_argument("--feed-interval", type=float, default=0.5, metavar="S")
    return p


def make_devnet(args: argparse.Namespace) -> Devnet:
    key = load_or_create_key_file(args.signing_key_file) if args.signing_key_file else None
    return Devnet(
        args.dialect,
        host=args.host,
        port=args.port,
        state_path=args.state,
        miner_keys=args.miner_keys or DEFAULT_MINER_KEYS,
        client_key=args.client_key,
        jwt_secret=args.jwt_secret,
        signing_key=key,
        receipt_signing=not args.no_receipt_signing,
        rate_limits=False if args.no_rate_limits else None,
        rate_limit_scale=args.rate_limit_scale,
    )


def ready_line(devnet: Devnet) -> dict[str, Any]:
    return {
        "event": "ready",
        "url": devnet.url,
        "api_url": devnet.api_url,
        "port": devnet.port,
        "dialect": devnet.dialect.value,
        "public_key_id": devnet.public_key_id,
        "health": devnet.health_path,
        "client_headers": devnet.client_headers(),
        "pid": os.getpid(),
    }


async def serve(args: argparse.Namespace) -> int:
    devnet = make_devnet(args)
    await devnet.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    feeder_task = None
    if args.feed > 0:
        feeder = Feeder(
            devnet.url,
            devnet.client_headers(),
            target=args.feed,
            seed=args.feed_seed,
            interval=args.feed_interval,
        )
        feeder_task = asyncio.create_task(feeder.run())
    print(json.dumps(ready_line(devnet)), flush=True)
    try:
        await stop.wait()
    finally:
        if feeder_task is not None:
            feeder_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder_task
        await devnet.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except OSError as exc:
        print(json.dumps({"event": "error", "error": str(exc)}), file=sys.stderr, flush=True)
        return 1
