"""JSON-lines logging for headless mode, with secret redaction.

Each record becomes one JSON object on one line::

    {"ts": "2026-01-05T12:00:00.123Z", "level": "INFO", "logger": "aitbc_miner.engine",
     "event": "job_claimed", "msg": "claimed job j-1 (sleep)", "job_id": "j-1"}

``event`` is the stable event name when the record comes from an engine event
(``extra={"event_name": ...}``), else the message itself.

Fields passed through ``extra=`` (or :func:`log_event`) are added as top-level keys;
``exc`` holds ``Type: message`` on one line, and ``traceback`` the full text only when the
level is DEBUG. Every registered secret (:func:`add_secret`) is replaced by ``***`` in the
rendered line, wherever it appears: message, fields, exception text, URLs.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

__all__ = ["JsonFormatter", "add_secret", "add_static_field", "log_event", "redact",
           "setup_logging"]

REDACTED = "***"
#: Loggers outside the package stay at this level so library chatter (httpx logs every
#: request at INFO) does not flood the journal.
THIRD_PARTY_LEVEL = logging.WARNING
_CORE_KEYS = ("ts", "level", "logger", "event")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_static_fields: dict[str, Any] = {}  # written on every line, e.g. {"gpus": "SIMULATED"}


def add_static_field(key: str, value: Any) -> None:
    """Put ``key: value`` on every line from now on (a simulated rig says so everywhere)."""
    _static_fields[key] = value


def add_secret(value: str | None) -> None:
    """Register a secret; from now on it is written as ``***`` in every log line."""
    if not value:
        return
    with _secrets_lock:
        # Also the forms it takes inside URLs and JSON strings.
        _secrets.update({value, quote(value, safe=""), json.dumps(value)[1:-1]})


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _exception_summary(exc: BaseException) -> str:
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__
    if cause is not None:
        summary += f" (caused by {type(cause).__name__}: {cause})"
    return _one_line(summary)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one redacted JSON object (no trailing newline)."""

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        payload: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(_static_fields)
        # Engine events carry a stable name; the human sentence then goes to "msg".
        event_name = getattr(record, "event_name", None)
        if isinstance(event_name, str):
            payload["msg"], payload["event"] = payload["event"], event_name
        for key, value in vars(record).items():
            if key in _RECORD_ATTRS or key.startswith("_") or key == "event_name":
                continue
            payload[f"extra_{key}" if key in _CORE_KEYS else key] = _jsonable(value)
        if record.exc_info and record.exc_info[1] is not None:
            payload["exc"] = _exception_summary(record.exc_info[1])
            if self.tracebacks:
                payload["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        if self.tracebacks and record.stack_info:
            payload["stack"] = record.stack_info
        line = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return redact(line)


def setup_logging(
    level: str,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> logging.Handler:
    """Send all logging to ``stream`` (default: the current ``sys.stdout``) as JSON lines.

    ``level`` applies to the ``aitbc_miner`` loggers; other libraries log at WARNING and
    above. DEBUG also adds tracebacks. Calling it again replaces the earlier handler.
    Returns the installed handler.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    for secret in secrets:
        add_secret(secret)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_aitbc_miner", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(tracebacks=numeric <= logging.DEBUG))
    handler._aitbc_miner = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, THIRD_PARTY_LEVEL))
    logging.getLogger("aitbc_miner").setLevel(numeric)
    return handler


def log_event(logger: logging.Logger, level: int | str, event: str, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as JSON keys; a field named like a LogRecord attribute
    (``name``, ``module``, ...) is written with a trailing underscore."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    extra = {(f"{k}_" if k in _RECORD_ATTRS else k): v for k, v in fields.items()}
    logger.log(numeric, event, extra=extra, stacklevel=2)
