"""Receipt verification: signature, pinning, tampering, 2026-08 extras, and our own facts."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aitbc_miner.protocol import POST_SIGNING_KEYS
from aitbc_miner.receipts import Verdict, canonical_bytes, public_key_id, sign, verify

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PINNED = public_key_id(KEY)
JOB_ID, PROVIDER, UNITS = "job-1", "rig-1", 1.5


def _receipt(**overrides: Any) -> dict[str, Any]:
    """A receipt as the coordinator signs it for 1.5 gpu_seconds at 0.02."""
    body: dict[str, Any] = {
        "version": "1.0",
        "receipt_id": "r-1",
        "job_id": JOB_ID,
        "provider": PROVIDER,
        "client": "client-1",
        "status": "COMPLETED",
        "units": UNITS,
        "unit_type": "gpu_seconds",
        "unit_price": 0.02,
        "price": 0.03,
        "started_at": 1_780_000_000,
        "completed_at": 1_780_000_002,
        "metadata": {
            "job_payload": {"type": "echo", "data": "héllo"},
            "job_constraints": {"gpu": None, "models": ["m", None]},
            "result": {"status": "completed", "output": "héllo"},
            "metrics": {"duration_ms": 1500},
        },
    }
    body.update(overrides)
    return sign(body, KEY)


def _check(receipt: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"pinned_key": PINNED, "job_id": JOB_ID,
                               "providers": frozenset({PROVIDER}), "units": UNITS}
    options.update(kwargs)
    return verify(receipt, **options)


def test_a_valid_receipt_signed_by_the_pinned_key_verifies_pinned_and_counts() -> None:
    # Given a receipt signed by the coordinator whose key we pinned, When verified
    result = _check(_receipt())
    # Then it is valid, pinned, counted, and names the key
    assert result.verdict is Verdict.VALID_PINNED and result.counted
    assert result.key_id == PINNED


def test_a_valid_receipt_without_a_pinned_key_is_reported_unpinned() -> None:
    # Given no pinned key in the config, When a valid receipt is verified
    result = _check(_receipt(), pinned_key=None)
    # Then it is valid but reported as unpinned (trust is not established)
    assert result.verdict is Verdict.VALID_UNPINNED
    assert "pinned" in result.reason


def test_a_receipt_signed_by_another_key_is_refused_when_a_key_is_pinned() -> None:
    # Given a receipt re-signed by someone else's key (valid against its own key_id)
    forged = sign({k: v for k, v in _receipt().items() if k != "signature"}, OTHER_KEY)
    # When verified with our pinned key, Then it is not accepted
    result = _check(forged)
    assert result.verdict is Verdict.INVALID and not result.counted
    assert "pinned" in result.reason
    # ...while without a pin it would only be "unpinned": pinning is what gives trust
    assert _check(forged, pinned_key=None).verdict is Verdict.VALID_UNPINNED


def _signed_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every leaf of the signed part of a receipt, as a key path."""
    if isinstance(value, dict):
        return [p for k, v in value.items() if k != "signature"
                for p in _signed_paths(v, (*prefix, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _signed_paths(v, (*prefix, i))]
    return [prefix] if value is not None else []


def _tamper(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return str(value) + "x"


SIGNED_FIELDS = _signed_paths(_receipt())


@pytest.mark.parametrize("path", SIGNED_FIELDS, ids=[".".join(map(str, p)) for p in SIGNED_FIELDS])
def test_tampering_with_any_signed_field_is_detected(path: tuple[Any, ...]) -> None:
    # Given a valid receipt, When any one signed value is changed after signing
    receipt = copy.deepcopy(_receipt())
    target = receipt
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = _tamper(target[path[-1]])
    # Then the signature no longer verifies (checked without our facts, so only the signature)
    result = verify(receipt, pinned_key=PINNED)
    assert result.verdict is Verdict.INVALID and not result.counted


def test_every_top_level_receipt_field_is_covered_by_the_tamper_test() -> None:
    # Given the spec's receipt fields, Then each signed one is among the tampered paths
    spec_fields = {"version", "receipt_id", "job_id", "provider", "client", "status", "units",
                   "unit_type", "unit_price", "price", "started_at", "completed_at", "metadata"}
    assert spec_fields <= {p[0] for p in SIGNED_FIELDS}


def test_adding_a_field_after_signing_is_detected() -> None:
    # Given a valid receipt, When a new signed-looking field is slipped in
    receipt = _receipt()
    receipt["bonus"] = 100
    # Then it does not verify
    assert verify(receipt, pinned_key=PINNED).verdict is Verdict.INVALID


def test_a_tampered_signature_is_detected() -> None:
    # Given a valid receipt whose signature bytes are altered
    receipt = _receipt()
    sig = receipt["signature"]["sig"]
    receipt["signature"]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    # When verified, Then it is invalid
    assert _check(receipt).verdict is Verdict.INVALID


def test_2026_08_post_signing_keys_do_not_break_verification() -> None:
    # Given a valid receipt to which 2026-08 adds its keys after signing (values and nulls)
    receipt = _receipt()
    for index, key in enumerate(sorted(POST_SIGNING_KEYS)):
        receipt[key] = None if index % 2 else f"pending-{index}"
    receipt["reinvest_amount"] = 1.25
    # ...and attestations (further signatures) are attached
    receipt["attestations"] = [copy.deepcopy(receipt["signature"])]
    # When verified, Then it is still valid and pinned
    assert _check(receipt).verdict is Verdict.VALID_PINNED
    assert POST_SIGNING_KEYS == {"zk_status", "zk_proof", "tee_status", "tee_attestation_id",
                                 "tee_quote", "reinvest_status", "reinvest_stake_id",
                                 "reinvest_amount"}


def test_null_values_are_outside_the_signed_bytes() -> None:
    # Given a receipt signed with a null field, When the null key is dropped or added again
    receipt = _receipt(client=None)
    without = {k: v for k, v in receipt.items() if k != "client"}
    # Then both forms verify (nulls are dropped before signing), and so does an extra null
    assert _check(receipt).verdict is Verdict.VALID_PINNED
    assert _check(without).verdict is Verdict.VALID_PINNED
    assert _check({**receipt, "note": None}).verdict is Verdict.VALID_PINNED


def test_the_canonical_form_is_sorted_compact_ascii_without_nulls() -> None:
    # Given a small receipt-like object, When its canonical bytes are built
    data = canonical_bytes({"b": 1, "a": {"z": None, "y": [1, None, "é"]}, "signature": {"x": 1},
                            "attestations": [], "zk_status": "pending"})
    # Then keys are sorted, separators compact, non-ASCII escaped, nulls and unsigned keys gone
    assert data == b'{"a":{"y":[1,"\\u00e9"]},"b":1}'
    assert json.loads(data) == {"a": {"y": [1, "é"]}, "b": 1}


@pytest.mark.parametrize("field, value, named", [
    ("job_id", "someone-elses-job", "job_id"),
    ("provider", "another-rig", "provider"),
    ("units", 99.0, "units"),
    ("price", 5.0, "price"),
])
def test_a_validly_signed_receipt_about_other_facts_is_a_mismatch(
    field: str, value: Any, named: str
) -> None:
    # Given a receipt validly signed by the pinned key but stating another job/provider/units/price
    receipt = sign({**{k: v for k, v in _receipt().items() if k != "signature"}, field: value},
                   KEY)
    # When checked against what we ran and reported
    result = _check(receipt)
    # Then it is a mismatch naming the field, and it does not count
    assert result.verdict is Verdict.MISMATCH and not result.counted
    assert named in result.reason.split(", ")


def test_units_we_did_not_report_are_a_mismatch_even_when_the_receipt_is_consistent() -> None:
    # Given a receipt billing 10 units (price consistent with them), When we reported 1.5
    receipt = sign({**{k: v for k, v in _receipt().items() if k != "signature"},
                    "units": 10.0, "price": 0.2}, KEY)
    # Then the units, and the price they imply, are named as the mismatch
    assert _check(receipt).reason == "units, price"


def test_the_provider_may_be_any_of_our_identities() -> None:
    # Given a 2026-01 receipt whose provider is the miner key string, not our miner id
    receipt = sign({**{k: v for k, v in _receipt().items() if k != "signature"},
                    "provider": "the-key"}, KEY)
    # When checked against both our identities, Then it is ours
    assert _check(receipt, providers=frozenset({PROVIDER, "the-key"})).counted


@pytest.mark.parametrize("receipt, verdict", [
    ("not a receipt", Verdict.MALFORMED),
    ({"job_id": JOB_ID}, Verdict.MALFORMED),
    ({"signature": {"alg": "RSA", "key_id": "k", "sig": "s"}}, Verdict.MALFORMED),
    ({"signature": {"alg": "Ed25519", "key_id": 5, "sig": "s"}}, Verdict.MALFORMED),
    ({"signature": {"alg": "Ed25519", "key_id": "short", "sig": "!!"}}, Verdict.INVALID),
])
def test_malformed_receipts_are_reported_not_raised(receipt: Any, verdict: Verdict) -> None:
    # Given something that is not a well-formed signed receipt, When verified
    result = verify(receipt, pinned_key=PINNED)
    # Then the verdict says so and nothing raises
    assert result.verdict is verdict and not result.counted
