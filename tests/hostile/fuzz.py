"""Seeded generators of hostile JSON: payloads (with the outcome each must get) and
coordinator answers. Deterministic for a given ``random.Random`` seed."""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from typing import Any

from aitbc_miner.runners.builtin import MAX_PAYLOAD_CHARS as BUILTIN_MAX_CHARS
from aitbc_miner.untrusted import MAX_PAYLOAD_CHARS, MAX_PAYLOAD_DEPTH

COMPLETED = "COMPLETED"

SURROGATES = ["\ud800", "\udfff", "a\udc00b", "\ud83d", "x\ude00"]
NULS = ["\x00", "a\x00b", "\x00\x00"]
CONTROLS = ["\x01", "\x07", "\x1b[31mred\x1b[0m", "\x7f", "\x85", "\u2028", "\u202e", "\r",
            "a\nb", "\t", "\x9b"]
PATHISH = ["../../etc/passwd", "/", "a/b", "..", ".", "?", "#", "%2F", "a?b#c", "~root",
           "C:\\x", "\\\\host\\share", " ", "a b"]
UNICODE = ["é", "日本語", "🙂", "\ufeff", "\u200b", "Ω≈ç√", "ｆｕｌｌ", "ß"]
# Job ids a coordinator must never make the miner put in a URL or a path.
BAD_IDS: list[Any] = [
    "a\nb", "abc\n", "a/b", "../x", "..", ".", "a?b", "a#b", "?", "#", "jöb", "日本", "🙂",
    "a b", "", " ", "a\x00b", "\ud800", "a%2Fb", "a.b", "-abc", "_x", "x" * 129, "a\rb",
    "a\tb", "/etc/passwd", "..%2F..", "a;b", "a&b", "a=b", "a+b", "a@b", "a:b", "\u202eabc",
    7, None, True, 1.5, [], {}, ["a"], {"id": "a"},
]


def clean_text(rng: random.Random, low: int = 0, high: int = 40) -> str:
    alphabet = string.ascii_letters + string.digits + " .,-_/\n\t" + "".join(UNICODE)
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def hostile_text(rng: random.Random) -> str:
    pool = rng.choice([SURROGATES, NULS, CONTROLS, PATHISH, UNICODE])
    return rng.choice(pool) + clean_text(rng, 0, 5)


def scalar(rng: random.Random) -> Any:
    return rng.choice([
        lambda: clean_text(rng), lambda: rng.randint(-10**6, 10**6),
        lambda: 10**rng.randint(20, 300),
        lambda: -(10**rng.randint(20, 300)), lambda: rng.uniform(-1e300, 1e300),
        lambda: 5e-324, lambda: -0.0, lambda: True, lambda: False, lambda: None,
        lambda: rng.choice(PATHISH + UNICODE + CONTROLS),
    ])()


def value(rng: random.Random, depth: int = 3) -> Any:
    """A random JSON value without surrogates or NULs, nested at most ``depth`` levels."""
    if depth <= 0 or rng.random() < 0.4:
        return scalar(rng)
    if rng.random() < 0.5:
        return [value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {clean_text(rng, 0, 8) or "k": value(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def nested(depth: int, leaf: Any = 0) -> Any:
    """``depth`` containers around ``leaf``, alternating lists and objects."""
    out = leaf
    for i in range(depth):
        out = [out] if i % 2 else {"n": out}
    return out


def plant(rng: random.Random, payload: dict[str, Any], item: Any) -> None:
    """Put ``item`` somewhere in ``payload``: a value, a key (text), or deep inside a list."""
    where = rng.randrange(3)
    if where == 0:
        payload[clean_text(rng, 1, 8)] = item
    elif where == 1 and isinstance(item, str):
        payload[item] = value(rng, 1)
    else:
        payload["deep"] = nested(rng.randint(1, 10), [1, item])


@dataclass(frozen=True)
class Case:
    kind: str
    payload: dict[str, Any]
    expect: frozenset[str]  # COMPLETED or the error codes this payload may end with


def _case(kind: str, payload: dict[str, Any], *expect: str) -> Case:
    return Case(kind, payload, frozenset(expect))


def good_base(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["noop", "echo", "sha256", "sleep"])
    if kind == "sleep":
        return {"type": "sleep", "seconds": rng.choice([0, 0.0, 0.001])}
    if kind == "noop":
        return {"type": "noop"}
    return {"type": kind, "data": clean_text(rng, 0, 200)}


def payload_case(rng: random.Random, *, huge: bool = False) -> Case:
    """One hostile (or plain) payload and what the miner must make of it."""
    if huge:
        return rng.choice([
            lambda: _case("huge_ok", {"type": "echo", "data": "h" * rng.randint(
                BUILTIN_MAX_CHARS // 2, BUILTIN_MAX_CHARS)}, COMPLETED),
            lambda: _case("huge_runner", {"type": "echo", "data": "h" * (
                BUILTIN_MAX_CHARS + rng.randint(1, BUILTIN_MAX_CHARS))}, "E_BADJOB"),
            lambda: _case("huge_engine", {"type": "sha256", "data": "h" * (
                MAX_PAYLOAD_CHARS + rng.randint(1, 1 << 20))}, "E_BADJOB"),
        ])()
    roll = rng.randrange(17)
    base = good_base(rng)
    if roll == 0:
        return _case("plain", base, COMPLETED)
    if roll == 1:  # a lone surrogate anywhere
        plant(rng, base, rng.choice(SURROGATES))
        return _case("surrogate", base, "E_BADJOB")
    if roll == 2:  # a NUL anywhere
        plant(rng, base, rng.choice(NULS))
        return _case("nul", base, "E_BADJOB")
    if roll == 3:  # the job type is hostile text
        return _case("type_text", {**base, "type": rng.choice(SURROGATES + NULS + CONTROLS)},
                     "E_BADJOB")
    if roll == 4:  # the model name holds control characters
        return _case("model_text", {**base, "model": "llama" + rng.choice(CONTROLS + NULS)},
                     "E_BADJOB")
    if roll == 5:  # control characters and odd keys are content: the job runs
        base = {"type": "echo", "data": "".join(rng.choice(CONTROLS + PATHISH + UNICODE)
                                                for _ in range(rng.randint(1, 20)))}
        base[rng.choice(PATHISH + UNICODE)] = rng.choice(CONTROLS)
        return _case("control_content", base, COMPLETED)
    if roll == 6:  # nested, within the bound
        base["deep"] = nested(rng.randint(1, MAX_PAYLOAD_DEPTH - 1))
        return _case("deep_ok", base, COMPLETED)
    if roll == 7:  # nested past the bound (and past the answer bound, now and then)
        base["deep"] = nested(rng.choice([MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1,
                                          rng.randint(MAX_PAYLOAD_DEPTH, 120),
                                          rng.randint(120, 700)]))
        return _case("deep_bad", base, "E_BADJOB")
    if roll == 8:  # the type is not a string, or missing, or empty
        bad_type = rng.choice([1, 0, -1, 1.5, True, False, None, [], ["noop"], {"t": "noop"}, ""])
        if rng.random() < 0.2:
            base.pop("type")
        else:
            base["type"] = bad_type
        return _case("type_wrong", base, "E_BADJOB")
    if roll == 9:  # a field the runner reads has the wrong type
        kind = rng.choice(["echo", "sha256", "sleep"])
        if kind == "sleep":
            return _case("field_wrong", {"type": "sleep", "seconds": rng.choice(
                ["1", None, [], {}, -1, 3601, 1e300, True])}, "E_BADJOB")
        return _case("field_wrong", {"type": kind, "data": rng.choice(
            [1, None, True, [], {}, ["x"], 1.5])}, "E_BADJOB")
    if roll == 10:  # a type nobody runs
        return _case("unknown_type", {"type": "t-" + clean_text(rng, 1, 30).replace("\n", "")
                                      .replace("\t", "")}, "E_UNSUPPORTED")
    if roll == 11:  # random extra keys and values of every kind
        for _ in range(rng.randint(1, 6)):
            base[clean_text(rng, 0, 10)] = value(rng, 4)
        base["type"] = base.get("type") or "noop"
        return _case("noise", base, COMPLETED)
    if roll == 12:  # timeout_s of every kind: only a positive number counts
        base["timeout_s"] = rng.choice(["10", None, [], -5, 0, True, 1e300, 10**30])
        return _case("timeout_field", base, COMPLETED)
    if roll == 13:  # a timeout so small the job cannot finish
        return _case("timeout_tiny", {"type": "sleep", "seconds": 0.5, "timeout_s": 1e-9},
                     "E_TIMEOUT")
    if roll == 14:  # medium-size strings
        return _case("big_string", {"type": rng.choice(["echo", "sha256"]),
                                    "data": clean_text(rng, 0, 10) * rng.randint(100, 3000)},
                     COMPLETED)
    if roll == 15:  # a number JSON has no word for (Python's json writes and reads them)
        plant(rng, base, rng.choice([float("nan"), float("inf"), float("-inf")]))
        return _case("non_finite", base, "E_BADJOB")
    return _case("empty", {}, "E_BADJOB")


# --- coordinator answers ---------------------------------------------------------------


def answer_body(rng: random.Random) -> str:
    """A hostile answer body: JSON of the wrong shape or with hostile strings, deep, huge,
    or not JSON at all."""
    roll = rng.randrange(9)
    if roll == 0:
        return rng.choice(["", "null", "[]", "0", '"ok"', "{", "<html>", "\x00", "NaN",
                           '{"status": NaN}', '{"a": 1e999}', "[" * 5000, "\ufeff{}",
                           '{"status": "ok"' + ", " * 10])
    if roll == 1:
        return json.dumps({"status": hostile_text(rng), "detail": hostile_text(rng)})
    if roll == 2:
        return json.dumps(nested(rng.randint(90, 700), "x"))
    if roll == 3:
        return json.dumps({"detail": "d" * rng.randint(1000, 100_000)})
    if roll == 4:
        return json.dumps({"status": "ok", "receipt": _receipt(rng)})
    if roll == 5:
        return json.dumps({"detail": nested(rng.randint(1, 200), hostile_text(rng))})
    if roll == 6:
        return json.dumps({"status": "ok", "session_token": value(rng, 3)})
    if roll == 7:
        return json.dumps({"miner_id": hostile_text(rng), "earnings_history": [
            {"job_id": rng.choice([x for x in BAD_IDS if isinstance(x, str)]),
             "amount": hostile_text(rng), "payment_status": hostile_text(rng)}]})
    return json.dumps(value(rng, 5))


def _receipt(rng: random.Random) -> Any:
    if rng.random() < 0.2:
        return value(rng, 3)
    return {"receipt_id": hostile_text(rng), "job_id": rng.choice(BAD_IDS),
            "provider": hostile_text(rng), "status": "COMPLETED", "units": scalar(rng),
            "unit_type": hostile_text(rng), "unit_price": scalar(rng), "price": scalar(rng),
            "metadata": value(rng, 3), "signature": rng.choice([
                None, {"alg": "Ed25519", "key_id": hostile_text(rng), "sig": hostile_text(rng)},
                value(rng, 2)])}


def poll_answer(rng: random.Random) -> tuple[str, Any]:
    """A hostile poll answer body and the job id it names (``None`` when none)."""
    roll = rng.randrange(4)
    if roll == 0:  # a bad id, with or without a fine payload
        job_id = rng.choice(BAD_IDS)
        body = {"job_id": job_id, "payload": rng.choice([{"type": "noop"}, value(rng, 2)]),
                "constraints": {}}
        return json.dumps(body), job_id
    if roll == 1:  # a fine id (one no coordinator knows), a hostile payload
        job_id = f"{rng.getrandbits(128):032x}"
        payload = payload_case(rng).payload
        if rng.random() < 0.2:
            payload = {"type": "noop", "deep": nested(rng.randint(100, 700))}
        body = {"job_id": job_id, "payload": payload,
                "constraints": rng.choice([{}, value(rng, 3), {"gpu": hostile_text(rng)}, None])}
        return json.dumps(body), job_id
    if roll == 2:  # a wrong shape
        return json.dumps(rng.choice([
            {"payload": {"type": "noop"}}, {"job_id": "a" * 32}, [{"job_id": "a" * 32}],
            {"job_id": "b" * 32, "payload": "noop"}, {"job_id": "c" * 32, "payload": []},
            value(rng, 3)])), None
    return answer_body(rng), None
