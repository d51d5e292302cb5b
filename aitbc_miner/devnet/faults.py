"""Fault injection: make the next N answers of an endpoint fail in a chosen way.

Kinds (per endpoint name, or ``*`` for every miner endpoint):
- ``status``: answer ``status`` (e.g. 503, or 429 with ``retry_after``) without acting,
  unless ``act`` is set, in which case the action is committed first (an uncertain 5xx).
- ``delay``: wait ``delay`` seconds, then answer normally.
- ``drop_before``: close the connection without acting and without an answer.
- ``drop_after``: commit the action (state, receipt), then close with no answer.
- ``malformed``: ``variant`` bad_json | missing_fields | wrong_types (after acting, status
  200) or html_200 | html_502 (a proxy's error page; nothing acted).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

MINER_ENDPOINTS = ("register", "heartbeat", "poll", "result", "fail", "earnings", "deregister")
CLIENT_ENDPOINTS = (
    "jobs_create", "job_get", "job_result", "job_cancel", "job_receipt", "job_receipts", "health",
)  # fmt: skip
ENDPOINTS = MINER_ENDPOINTS + CLIENT_ENDPOINTS
KINDS = ("status", "delay", "drop_before", "drop_after", "malformed")
VARIANTS = ("bad_json", "missing_fields", "wrong_types", "html_200", "html_502")

# The key each answer's reader needs most, dropped by ``missing_fields``.
_ESSENTIAL = {
    "register": ("status", "session_token"),
    "heartbeat": ("status",),
    "poll": ("job_id",),
    "result": ("status", "receipt"),
    "fail": ("status",),
    "earnings": ("miner_id", "earnings_history", "total_earnings"),
    "deregister": ("status",),
}
HTML_PAGE = ("<html><head><title>502 Bad Gateway</title></head>"
             "<body><h1>502 Bad Gateway</h1></body></html>")
_ids = itertools.count(1)


@dataclass(slots=True)
class Fault:
    endpoint: str
    kind: str
    times: int | None = 1
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    variant: str = "bad_json"
    body: str | None = None
    content_type: str = "application/json"
    act: bool | None = None
    id: int = field(default_factory=lambda: next(_ids))
    hits: int = 0

    def __post_init__(self) -> None:
        if self.endpoint != "*" and self.endpoint not in ENDPOINTS:
            raise ValueError(
                f"unknown endpoint {self.endpoint!r}; one of {', '.join(ENDPOINTS)}, *")
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind == "malformed" and self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; one of {', '.join(VARIANTS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or null for until cleared)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        allowed = set(cls.__dataclass_fields__) - {"id", "hits"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    @property
    def acts_first(self) -> bool:
        """Whether the real action is committed before the fault shapes the answer."""
        if self.act is not None:
            return self.act
        if self.kind == "malformed":
            return self.variant not in ("html_200", "html_502")
        return self.kind in ("delay", "drop_after")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """Armed faults, consumed first-armed-first for each matching request."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def inject(self, endpoint: str, kind: str, **options: Any) -> Fault:
        return self.add(Fault(endpoint=endpoint, kind=kind, **options))

    def take(self, endpoint: str) -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint or (
                fault.endpoint == "*" and endpoint in MINER_ENDPOINTS
            ):
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def clear(self, endpoint: str | None = None) -> None:
        self._faults = [f for f in self._faults if endpoint is not None and f.endpoint != endpoint]

    def list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self._faults]


def _wrong_type(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return "not-a-number"
    if isinstance(value, str):
        return 12345
    if isinstance(value, dict):
        return ["not", "an", "object"]
    return {"not": "a list"} if isinstance(value, list) else 42


def malformed_body(variant: str, endpoint: str, body: Any) -> tuple[int, str, str]:
    """(status, text, content type) of a garbled answer built from the real one."""
    if variant in ("html_200", "html_502"):
        return (200 if variant == "html_200" else 502), HTML_PAGE, "text/html"
    if variant == "bad_json":
        text = json.dumps(body if body is not None else {"status": "ok"})
        return 200, text[: max(1, len(text) // 2)] + "\x00,]", "application/json"
    obj = body if isinstance(body, dict) else {}
    if variant == "missing_fields":
        obj = {k: v for k, v in obj.items() if k not in _ESSENTIAL.get(endpoint, ("status",))}
    else:
        obj = {k: _wrong_type(v) for k, v in obj.items()} if obj else {"job_id": 7, "status": 1}
    return 200, json.dumps(obj), "application/json"
