"""The one exception the coordinator logic raises; the web layer turns it into an answer."""

from __future__ import annotations

from typing import Any


class HttpError(Exception):
    """An error answer: ``{"detail": ...}`` with ``status``, as FastAPI writes it.

    ``text`` replaces the JSON body (the coordinator's unhandled 500 is plain text).
    """

    def __init__(
        self,
        status: int,
        detail: Any = None,
        *,
        headers: dict[str, str] | None = None,
        text: str | None = None,
    ) -> None:
        super().__init__(f"{status}: {detail if text is None else text}")
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.text = text


# Stable error texts (tests and miners match on them).
MINER_NOT_REGISTERED = "miner not registered"
MINER_NOT_FOUND = "miner not found"
JOB_NOT_FOUND = "job not found"
JOB_NOT_READY = "job not ready"
JOB_NOT_CANCELABLE = "job not cancelable"
RECEIPT_NOT_FOUND = "receipt not found"
INVALID_API_KEY = "invalid api key"
MISSING_CREDENTIALS = "missing credentials"
INVALID_TOKEN = "invalid token"
API_KEY_FORBIDDEN = "api keys are not accepted on client routes; use a bearer token"
WRONG_ROLE = "token role not allowed on this route"
JOB_EXPIRED = "job expired"
CANCELED_BY_CLIENT = "canceled by client"
