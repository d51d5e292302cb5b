"""``aitbc-miner key show|generate|import|export-public`` and ``aitbc-miner verify-result``.

The key commands read the config (``identity``) to find the rig key; ``verify-result`` is
the client's side and reads no config: the result as fetched, and the rig's public key.

Exit codes: ``key``: 0 done, 2 the key cannot be used (config, PIN, missing or refused
key; one line on stderr). ``verify-result``: 0 verified, 1 does not verify, 2 bad input
(unreadable file, not JSON, no result in it, not a public key).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..codes import ExitCode
from ..config import Settings
from ..identity.rigkey import (
    RigKey,
    RigKeyError,
    generate_rig_key,
    import_rig_key,
    load_public_key,
    open_rig_key,
)
from ..identity.signed_result import NotAResult, ResultCheck, verify_fetched
from ..receipts import b64url

COMMANDS = ("key", "verify-result")
MAX_RESULT_BYTES = 64 << 20  # a fetched result larger than this is refused as bad input


def add_parsers(sub: Any) -> list[argparse.ArgumentParser]:
    """Add ``key`` and ``verify-result`` to the subcommands; returns every parser added
    (the caller gives them the global flags)."""
    key = sub.add_parser("key", help="the rig's identity key (signs every result)")
    actions = key.add_subparsers(dest="key_command", metavar="ACTION", required=True,
                                 parser_class=type(key))
    show = actions.add_parser("show", help="the key's id, public key and where it lives")
    show.add_argument("--format", choices=["text", "json"], default="text",
                      help="output format (default text)")
    generate = actions.add_parser(
        "generate", help="make the rig key (inside the token when one is configured)")
    imported = actions.add_parser(
        "import", help="import an Ed25519 PKCS#8 PEM private key as the rig key")
    imported.add_argument("file", type=Path, help="the PEM file (mode 0600)")
    export = actions.add_parser("export-public", help="print the public key for clients")
    export.add_argument("--format", choices=["pem", "raw"], default="pem",
                        help="pem (default) or raw: URL-safe base64 of the 32 bytes")
    export.add_argument("--output", type=Path, metavar="FILE", help="write here, not stdout")
    verify = sub.add_parser(
        "verify-result", help="check a result's rig signature with the rig's public key")
    verify.add_argument("file", help="the result as fetched from the coordinator: GET "
                        "/v1/jobs/{id}/result, or the receipt ('-' = stdin)")
    verify.add_argument("--public-key", required=True, metavar="KEY",
                        help="the rig's public key: a file from `key export-public`, or its "
                        "URL-safe base64 (as --public-key=KEY: it may start with '-')")
    verify.add_argument("--job-id", help="the job the result must be for")
    verify.add_argument("--format", choices=["text", "json"], default="text",
                        help="output format (default text)")
    return [key, show, generate, imported, export, verify]


def run(args: argparse.Namespace, settings: Callable[[], Settings]) -> int:
    """Run ``key ...`` or ``verify-result``; ``settings`` loads the config when needed.
    Raises RigKeyError/TokenError for the caller to say in one line (exit 2)."""
    if args.command == "verify-result":
        return _verify(args)
    config = settings()
    action = args.key_command
    if action == "generate":
        rig_key = generate_rig_key(config)
        return _done(rig_key, "made")
    if action == "import":
        rig_key = import_rig_key(config, args.file)
        return _done(rig_key, "imported")
    rig_key = open_rig_key(config)
    try:
        if action == "show":
            info = rig_key.info()
            if args.format == "json":
                print(json.dumps({"key_id": info.key_id, "public_key": info.public_key,
                                  "store": info.store, "location": info.location,
                                  "attributes": dict(info.facts)}, indent=2))
            else:
                print(f"key id      {info.key_id}\npublic key  {info.public_key}\n"
                      f"store       {info.store}: {info.location}")
                for name, value in info.facts:
                    print(f"  {name.lower():<18} {value}")
            return ExitCode.OK
        text = _public_text(rig_key, args.format)
        if args.output is not None:
            args.output.write_text(text, encoding="ascii")
        else:
            print(text, end="")
        return ExitCode.OK
    finally:
        rig_key.close()


def _done(rig_key: RigKey, verb: str) -> int:
    try:
        info = rig_key.info()
        print(f"rig key {info.key_id} {verb}: {info.store}: {info.location}")
        return ExitCode.OK
    finally:
        rig_key.close()


def _public_text(rig_key: RigKey, fmt: str) -> str:
    if fmt == "raw":
        return b64url(rig_key.public_raw) + "\n"
    return rig_key.public_key.public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


# --- verify-result ------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    try:
        public_key = load_public_key(_public_key_text(args.public_key))
        document = json.loads(_read_input(args.file))
        checks = verify_fetched(document, public_key, job_id=args.job_id)
    except (RigKeyError, NotAResult, OSError, ValueError, RecursionError) as exc:
        reason = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        print(f"aitbc-miner verify-result: bad input: {reason}", file=sys.stderr)
        return ExitCode.CONFIG
    ok = all(check.ok for check in checks)
    if args.format == "json":
        print(json.dumps({"verified": ok, "checks": [_check_json(c) for c in checks]},
                         indent=2))
    elif ok:
        first = checks[0]
        when = (datetime.fromtimestamp(first.signed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if first.signed_at is not None else "?")
        print(f"verified: job {first.job_id}, rig {first.rig_id}, key {first.key_id}, "
              f"signed {when} ({', '.join(c.where for c in checks)})")
    else:
        for check in checks:
            if not check.ok:
                print(f"DOES NOT VERIFY: {check.where}: {check.reason}")
    return ExitCode.OK if ok else 1


def _check_json(check: ResultCheck) -> dict[str, Any]:
    return {"where": check.where, "ok": check.ok, "reason": check.reason,
            "job_id": check.job_id, "rig_id": check.rig_id, "key_id": check.key_id,
            "signed_at": check.signed_at}


def _public_key_text(value: str) -> str:
    """``--public-key``: a file's content when it names a file, else the key itself."""
    path = Path(value)
    return path.read_text(encoding="ascii") if path.is_file() else value


def _read_input(name: str) -> bytes:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_RESULT_BYTES + 1)
    else:
        with open(name, "rb") as file:
            data = file.read(MAX_RESULT_BYTES + 1)
    if len(data) > MAX_RESULT_BYTES:
        raise ValueError(f"the input is larger than {MAX_RESULT_BYTES >> 20} MiB")
    return data
