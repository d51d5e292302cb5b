"""Signed results: the rig vouches for what it submits; a client checks it with the public key.

The rig adds one key to the result object it posts to ``/miners/{job_id}/result``::

    "rig_signature": {"v": 1, "alg": "Ed25519", "key_id": "<16 hex>", "job_id": "...",
                      "rig_id": "<miner.id>", "signed_at": <unix seconds>,
                      "result_sha256": "<hex>", "metrics": {...}, "sig": "<b64url>"}

``result_sha256`` is the SHA-256 of the canonical JSON (the receipts' recipe:
``receipts.canonical_json``) of the result without ``rig_signature``; ``sig`` is the
Ed25519 signature over the canonical JSON of the block without ``sig``. It rides inside
``result`` because that is what both coordinator lines keep: the job record a client
reads (``GET /jobs/{id}/result``) and the receipt's ``metadata.result``. A top-level key
of the request would be dropped, and ``metrics`` reaches only the receipt.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..receipts import b64url, b64url_decode, canonical_json
from .rigkey import RigKey, key_id_of, public_raw

SIGNATURE_KEY = "rig_signature"
BLOCK_VERSION = 1


class NotAResult(ValueError):
    """The document holds no result to check (bad input, not a failed check)."""


def result_digest(result: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the result's canonical JSON, its signature block left out."""
    body = {k: v for k, v in result.items() if k != SIGNATURE_KEY}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def signed_bytes(block: Mapping[str, Any]) -> bytes:
    """What ``sig`` signs: the block's canonical JSON without ``sig``."""
    return canonical_json({k: v for k, v in block.items() if k != "sig"})


class ResultSigner:
    """Signs each result with the rig key; a token key signs off the event loop."""

    def __init__(self, key: RigKey, rig_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.rig_id = rig_id
        self.clock = clock

    def sign_blocking(self, job_id: str, result: Mapping[str, Any],
                      metrics: Mapping[str, Any]) -> dict[str, Any]:
        """``result`` with its ``rig_signature`` block (a new dict; the input is kept).
        Both are taken as they travel (a JSON round trip: keys become strings, tuples
        lists), so what is signed is exactly what the coordinator receives."""
        result, metrics = json.loads(json.dumps([result, metrics], allow_nan=False))
        block: dict[str, Any] = {
            "v": BLOCK_VERSION, "alg": "Ed25519", "key_id": self.key.key_id,
            "job_id": job_id, "rig_id": self.rig_id, "signed_at": int(self.clock()),
            "result_sha256": result_digest(result), "metrics": dict(metrics),
        }
        block["sig"] = b64url(self.key.sign(signed_bytes(block)))
        return {**result, SIGNATURE_KEY: block}

    async def sign(self, job_id: str, result: Mapping[str, Any],
                   metrics: Mapping[str, Any]) -> dict[str, Any]:
        if self.key.blocking:
            return await asyncio.to_thread(self.sign_blocking, job_id, result, metrics)
        return self.sign_blocking(job_id, result, metrics)


@dataclass(frozen=True, slots=True)
class ResultCheck:
    """One verification: ``ok``, else ``reason`` says what does not hold."""

    where: str  # which copy: "result", "receipt.metadata.result", ...
    ok: bool
    reason: str = ""
    job_id: str | None = None
    rig_id: str | None = None
    key_id: str | None = None
    signed_at: int | None = None


def verify_result(result: Any, public_key: Ed25519PublicKey, *, job_id: str | None = None,
                  where: str = "result") -> ResultCheck:
    """Check one result object's ``rig_signature`` with the rig's public key alone."""

    def no(reason: str, block: Mapping[str, Any] | None = None) -> ResultCheck:
        block = block or {}
        return ResultCheck(where, False, reason, _str(block.get("job_id")),
                           _str(block.get("rig_id")), _str(block.get("key_id")))

    if not isinstance(result, dict):
        return no("the result is not a JSON object")
    block = result.get(SIGNATURE_KEY)
    if not isinstance(block, dict):
        return no(f"the result carries no {SIGNATURE_KEY} block (not signed)")
    if block.get("alg") != "Ed25519" or not isinstance(block.get("sig"), str):
        return no("the signature block is not an Ed25519 signature", block)
    expected_id = key_id_of(public_raw(public_key))
    if block.get("key_id") != expected_id:
        return no(f"signed by key {_str(block.get('key_id'))!s}, not by {expected_id}", block)
    try:
        public_key.verify(b64url_decode(block["sig"]), signed_bytes(block))
    except (InvalidSignature, ValueError, binascii.Error):
        return no("the signature does not match the signed block", block)
    if block.get("result_sha256") != result_digest(result):
        return no("the result was changed after it was signed (sha256 differs)", block)
    if job_id is not None and block.get("job_id") != job_id:
        return no(f"signed for job {_str(block.get('job_id'))}, not {job_id}", block)
    signed_at = block.get("signed_at")
    return ResultCheck(where, True, "", _str(block.get("job_id")), _str(block.get("rig_id")),
                       expected_id, signed_at if isinstance(signed_at, int) else None)


def verify_fetched(document: Any, public_key: Ed25519PublicKey, *,
                   job_id: str | None = None) -> list[ResultCheck]:
    """Check every copy of the result in what a client fetched: ``GET /jobs/{id}/result``
    (``{"result", "receipt"}``), a receipt (``GET /jobs/{id}/receipt``), or a bare result.
    A receipt's ``job_id`` must be the signed one, and the metrics it billed the signed ones.

    Raises:
        NotAResult: nothing in ``document`` looks like a result.
    """
    if not isinstance(document, dict):
        raise NotAResult("the file does not hold a JSON object")
    if "result" in document:  # GET /jobs/{id}/result
        result, receipt = document["result"], document.get("receipt")
    elif isinstance(document.get("metadata"), dict):  # a receipt
        result, receipt = None, document
    elif SIGNATURE_KEY in document:  # a bare result
        result, receipt = document, None
    else:
        raise NotAResult("the file holds neither a result nor a receipt")
    copies = [] if result is None else [("result", result)]
    checks: list[ResultCheck] = []
    if isinstance(receipt, dict):
        metadata = receipt.get("metadata")
        if isinstance(metadata, dict) and "result" in metadata:
            copies.append(("receipt.metadata.result", metadata["result"]))
        receipt_job = _str(receipt.get("job_id"))
        if job_id is not None and receipt_job is not None and receipt_job != job_id:
            checks.append(ResultCheck("receipt.job_id", False,
                                      f"the receipt is for job {receipt_job}, not {job_id}"))
        job_id = job_id or receipt_job
    if not copies:
        raise NotAResult("the receipt holds no result")
    checks += [verify_result(copy, public_key, job_id=job_id, where=where)
               for where, copy in copies]
    if isinstance(receipt, dict) and all(check.ok for check in checks):
        checks.append(_billed_metrics(receipt, copies[-1][1]))
    return checks


def _billed_metrics(receipt: Mapping[str, Any], result: Mapping[str, Any]) -> ResultCheck:
    """The receipt billed the metrics the rig signed (the coordinator may add keys)."""
    signed = result[SIGNATURE_KEY].get("metrics")
    billed = receipt.get("metadata", {}).get("metrics")
    where = "receipt.metadata.metrics"
    if not isinstance(signed, dict) or not isinstance(billed, dict):
        return ResultCheck(where, False, "the receipt or the signature lacks metrics")
    changed = sorted(k for k in signed if canonical_json(signed[k]) != canonical_json(
        billed.get(k)))
    if changed:
        return ResultCheck(where, False, "the receipt billed other metrics than the rig "
                           f"signed: {', '.join(changed)}")
    return ResultCheck(where, True)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
