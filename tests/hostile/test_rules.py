"""The hostile-input rules on their own: the job id rule, the name and payload checks,
scrubbing, the bounded decoder, and where they guard SQLite and URLs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from aitbc_miner.coordinator import (
    CoordinatorClient,
    ProtocolViolation,
    ServerError,
    Uncertain,
    UnsafeJobId,
)
from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet
from aitbc_miner.journal import Journal, Outcome
from aitbc_miner.protocol import (
    JOB_ID_MAX_CHARS,
    AssignedJob,
    HeartbeatRequest,
    RegisterRequest,
    is_job_id,
    shown_job_id,
)
from aitbc_miner.untrusted import (
    MAX_ANSWER_BYTES,
    MAX_ANSWER_DEPTH,
    MAX_PAYLOAD_DEPTH,
    Malformed,
    loads,
    loads_pruned,
    name_problem,
    payload_problem,
    scrub,
)

from .fuzz import BAD_IDS, nested

# --- the job id rule ---------------------------------------------------------------


@pytest.mark.parametrize("job_id", [
    uuid.uuid4().hex, str(uuid.uuid4()), "j1", "no-such-job", "A_b-9", "x" * JOB_ID_MAX_CHARS])
def test_ids_coordinators_issue_are_job_ids(job_id: str) -> None:
    assert is_job_id(job_id)


@pytest.mark.parametrize("job_id", BAD_IDS, ids=ascii)
def test_anything_else_is_not_a_job_id(job_id: object) -> None:
    assert not is_job_id(job_id)


@pytest.mark.parametrize("job_id", BAD_IDS, ids=ascii)
def test_a_bad_id_is_quoted_in_ascii_and_bounded(job_id: object) -> None:
    shown = shown_job_id(job_id if not isinstance(job_id, str) else job_id * 50)
    assert shown.isascii() and shown.isprintable() and len(shown) <= 83


# --- names, payloads, free text ------------------------------------------------------


@pytest.mark.parametrize("name", ["noop", "llama3.2:latest", "日本語", "t-a/b ?#", "x" * 256])
def test_a_clean_name_passes(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "x" * 257, "a\nb", "\x00", "\ud800", "\x1b[2J", "\u202e",
                                  "\u2028", "\x85", "tab\t"], ids=ascii)
def test_a_name_with_controls_surrogates_or_no_length_is_refused(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("payload", [
    {"type": "echo", "data": "line\nnext\ttab \x1b[1m bold"},  # controls are content
    {"type": "noop", "../../x": "/etc/passwd", "?#": ["é", 1, 1.5, None, True]},
    {"type": "noop", "deep": nested(MAX_PAYLOAD_DEPTH - 1)},
    {"type": "noop", "big": 10**300, "small": -5e-324},
])
def test_a_payload_within_the_rules_passes(payload: dict) -> None:
    assert payload_problem(payload) is None


@pytest.mark.parametrize(("payload", "problem"), [
    ({"type": "\ud800"}, "surrogate"),
    ({"type": "noop", "k\ud83d": 1}, "key"),
    ({"type": "noop", "list": [[{"x": "a\x00b"}]]}, "NUL"),
    ({"type": "noop", "deep": nested(MAX_PAYLOAD_DEPTH)}, "deeper than 64"),
    ({"type": "noop", "n": float("nan")}, "not finite"),
    ({"type": "noop", "n": [float("-inf")]}, "not finite"),
    ({"type": "noop", "big": "x" * (4 << 20)}, "larger than"),
    ({"type": "noop", "set": {1, 2}}, "not JSON"),
    ({1: "noop"}, "not a string"),
    (["noop"], "not a JSON object"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_payload_against_the_rules_says_why(payload: object, problem: str) -> None:
    assert problem in (payload_problem(payload) or "")


def test_a_payload_nested_beyond_any_stack_is_refused_without_recursion() -> None:
    assert "deeper" in (payload_problem({"deep": nested(100_000)}) or "")


def test_scrub_keeps_text_readable_and_storable() -> None:
    text = scrub("ok\ttab\nline \x00 \ud800 \x1b[31m \u202e \x85 " + "x" * 5000)
    assert text.startswith("ok\ttab\nline \ufffd \ufffd \ufffd[31m \ufffd \ufffd ")
    assert text.encode("utf-8") and len(text) == 2001 and text.endswith("…")


# --- the bounded decoder -------------------------------------------------------------------


def test_json_within_bounds_decodes_as_json_does() -> None:
    text = json.dumps({"a": [1, {"b": "[[[{{{"}], "s": "\ud800", "n": None, "f": 1.5})
    assert loads(text) == json.loads(text) == loads(text.encode())


def test_depth_is_counted_on_brackets_outside_strings() -> None:
    assert loads(json.dumps(nested(MAX_ANSWER_DEPTH, "[" * 500))) is not None
    with pytest.raises(Malformed, match="deeper than 96"):
        loads(json.dumps(nested(MAX_ANSWER_DEPTH + 1)))


@pytest.mark.parametrize("text", ["[" * 1_000_000, "[" * 5000 + "]" * 5000,
                                  '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_nesting_far_past_the_bound_is_malformed_never_a_recursion_error(text: str) -> None:
    with pytest.raises(Malformed):
        loads(text)


@pytest.mark.parametrize("raw", [b"\xff\xfe{", b'{"a": "\xc3"}', b"", b"{", b'"abc', b"[1,]",
                                 b"1" * 5000, b'{"a": 1} x'], ids=repr)
def test_text_that_is_not_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(Malformed):
        loads(raw)


def test_size_is_bounded_before_decoding() -> None:
    loads(b" " * 10 + b"1", max_bytes=11)
    with pytest.raises(Malformed, match="over the limit of 10"):
        loads(b" " * 10 + b"1", max_bytes=10)


def test_nan_and_infinity_read_as_python_writes_them() -> None:
    value = loads('{"a": NaN, "b": Infinity}')
    assert value["a"] != value["a"] and value["b"] == float("inf")
    assert payload_problem(value) is not None  # a payload holding one is refused


def test_pruning_keeps_the_envelope_and_cuts_what_is_too_deep() -> None:
    text = json.dumps({"job_id": "a1", "payload": {"type": "noop", "x": nested(500)}, "k": 2})
    value, pruned = loads_pruned(text)
    assert pruned and value["job_id"] == "a1" and value["k"] == 2
    assert loads(json.dumps(value)) == value  # cut to null at the bound...
    assert loads_pruned('{"a": [1]}') == ({"a": [1]}, False)  # ...so callers use the flag


def test_pruning_broken_text_is_still_malformed() -> None:
    with pytest.raises(Malformed):
        loads_pruned("[" * 5000)


# --- where the rules guard SQLite --------------------------------------------------------


async def test_the_journal_stores_hostile_text_without_failing(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        payload = {"type": "\ud800", "k\x00": ["\udfff", "\x1b[31m"]}
        assert await journal.claim("j1", payload, {"gpu": "\ud83d"})
        await journal.mark_staged_again("j1", "detail \ud800 \x00 from a coordinator")
        await journal.stage("j1", Outcome.FAILED, "fail",
                            {"error_code": "E_BADJOB", "error_message": "\ud800"})
        stored = await journal.store_receipt(
            "j1", {"receipt_id": "r\ud800\x00", "unit_type": "\udfff", "units": "x"},
            verdict="malformed", reason="bad \ud800", key_id="\x00", counted=False)
        record = await journal.get("j1")
        assert record is not None and record.job_type is None
        assert record.payload == payload and record.constraints == {"gpu": "\ud83d"}
        assert record.last_error == "detail \ufffd \ufffd from a coordinator"
        assert stored.receipt_id == "r\ufffd\ufffd" and stored.unit_type == "\ufffd"
        assert [r.receipt_id for r in await journal.receipts("j1")] == ["r\ufffd\ufffd"]
        assert (await journal.receipt_body("r\ufffd\ufffd") or {})["receipt_id"] == "r\ud800\x00"
    finally:
        await journal.close()


# --- where the rules guard URLs: the coordinator client --------------------------------------


@pytest.fixture
async def client(devnet: Devnet):
    c = CoordinatorClient(devnet.url, DEFAULT_MINER_KEYS[0], "rig-rules", connect_timeout_s=1.0)
    await c.register(RegisterRequest(concurrency=1))
    yield c
    await c.aclose()


@pytest.mark.parametrize("job_id", [b for b in BAD_IDS if isinstance(b, str)], ids=ascii)
async def test_no_url_is_built_from_a_bad_id(job_id: str, client: CoordinatorClient,
                                             devnet: Devnet) -> None:
    before = len(devnet.request_log)
    with pytest.raises(UnsafeJobId):
        await client.result(job_id, {"result": {}, "metrics": {}})
    with pytest.raises(UnsafeJobId):
        await client.fail(job_id, {"error_code": "E_BADJOB", "error_message": "x", "metrics": {}})
    assert len(devnet.request_log) == before  # nothing was sent


@pytest.mark.parametrize("job_id", ["a\nb", "../x", "a/b", "a?b", "a#b", "jöb", 7, None])
async def test_a_poll_answer_naming_a_bad_id_is_a_protocol_violation(
    job_id: object, client: CoordinatorClient, devnet: Devnet
) -> None:
    devnet.inject("poll", "status", status=200,
                  body=json.dumps({"job_id": job_id, "payload": {"type": "noop"}}))
    with pytest.raises(ProtocolViolation, match="invalid job id") as caught:
        await client.poll()
    assert caught.value.message.isprintable()


async def test_a_poll_answer_too_deep_to_read_whole_comes_back_raw(
    client: CoordinatorClient, devnet: Devnet
) -> None:
    devnet.inject("poll", "status", status=200, body=json.dumps(
        {"job_id": "a1", "payload": {"type": "noop", "x": nested(900)}, "constraints": {}}))
    answer = await client.poll()
    assert isinstance(answer, dict) and not isinstance(answer, AssignedJob)
    assert answer["job_id"] == "a1"


async def test_an_answer_longer_than_the_bound_is_not_read(
    client: CoordinatorClient, devnet: Devnet
) -> None:
    devnet.inject("heartbeat", "status", status=200,
                  body='{"status": "' + "x" * MAX_ANSWER_BYTES + '"}')
    with pytest.raises(Uncertain, match="longer than"):
        await client.heartbeat(HeartbeatRequest())


async def test_a_hostile_error_detail_is_scrubbed_and_never_recursion(
    client: CoordinatorClient, devnet: Devnet
) -> None:
    devnet.inject("poll", "status", status=503, body=json.dumps({"detail": "\ud800\x00\x1b"}))
    devnet.inject("poll", "status", status=503, body="[" * 100_000)
    for _ in range(2):
        with pytest.raises(ServerError) as caught:
            await client.poll()
        assert str(caught.value).isprintable()


async def test_a_body_that_cannot_be_decoded_is_uncertain_not_a_crash() -> None:
    def garbled_gzip(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    client = CoordinatorClient("http://coordinator.invalid", "key", "rig",
                               transport=httpx.MockTransport(garbled_gzip))
    try:
        with pytest.raises(Uncertain, match="DecodingError"):
            await client.heartbeat(HeartbeatRequest())
    finally:
        await client.aclose()
