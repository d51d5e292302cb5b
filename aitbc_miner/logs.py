"""JSON-lines logging (headless, and the console's log file), with secret redaction.

Every line, whatever logged it, is one JSON object with the same core keys::

    {"ts": "2026-01-05T12:00:00.123Z", "level": "INFO", "logger": "aitbc_miner.engine",
     "event": "outcome_delivered", "msg": "job j-1 (sleep) completed in 1.00s ...",
     "job_id": "j-1"}

``event`` is a stable name: the engine event's name (``extra={"event_name": ...}``, or
:func:`log_event`), else one made from the message's template (its words before any
argument is put in, ``"cannot prune job folders: %s"`` -> ``cannot_prune_job_folders``), so
the same call always logs the same name. ``msg`` is the sentence.

Fields passed through ``extra=`` (or :func:`log_event`) are added as top-level keys;
``exc`` names the exception on one line (the leaf causes of an exception group, not the
group), and ``traceback`` holds the full text only when the level is DEBUG. Every
registered secret (:func:`add_secret`) is replaced by ``***`` in the rendered line,
wherever it appears: message, fields, exception text, URLs.

Under systemd (stdout is the journal stream named by ``JOURNAL_STREAM``) each line starts
with its syslog priority, ``<3>`` for ERROR and so on (sd-daemon(3)), so journald files it
at that priority. A reader that closes stdout (``| head``) ends the miner quietly: the
handler calls ``on_output_closed`` once and writes nothing more.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

__all__ = ["JsonFormatter", "add_secret", "add_static_field", "describe_exception",
           "event_line", "journal_prefix", "log_event", "redact", "setup_logging"]

REDACTED = "***"
#: Loggers outside the package stay at this level so library chatter (httpx logs every
#: request at INFO) does not flood the journal.
THIRD_PARTY_LEVEL = logging.WARNING
#: The console's log file is rotated at this size, keeping this many older files.
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
_CORE_KEYS = ("ts", "level", "logger", "event", "msg")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
# sd-daemon(3): SD_CRIT 2, SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.(?:\d+|\*))?[diouxXeEfFgGcrsa%]")
_WORD = re.compile(r"[a-z0-9]+")
_NAME_WORDS = 6  # at most this many words in a name made from a template

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


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions an exception group holds, however deep; else ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line, with its cause; an exception group (a TaskGroup's
    "unhandled errors (1 sub-exception)") is replaced by the errors it holds."""
    parts = []
    for leaf in _leaves(exc):
        text = _named(leaf)
        cause = leaf.__cause__
        if cause is not None:
            text += f" (caused by {'; '.join(_named(c) for c in _leaves(cause))})"
        parts.append(text)
    return _one_line("; ".join(parts))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def event_name_of(record: logging.LogRecord) -> str:
    """The record's stable event name: the one it was given, else its template's words."""
    given = getattr(record, "event_name", None)
    if isinstance(given, str) and given:
        return given
    template = record.msg if isinstance(record.msg, str) else ""
    words = _WORD.findall(_PLACEHOLDER.sub(" ", template).lower())[:_NAME_WORDS]
    return "_".join(words) or f"{record.name.rsplit('.', 1)[-1]}_{record.levelname.lower()}"


def journal_prefix(levelno: int) -> str:
    """``<N>``: the sd-daemon(3) priority prefix journald reads off a line."""
    return f"<{next((p for lvl, p in _PRIORITIES if levelno >= lvl), 7)}>"


def is_journal_stream(stream: Any) -> bool:
    """Whether ``stream`` is the journal stream systemd named in ``JOURNAL_STREAM``
    (``device:inode``; a variable inherited by a process whose output goes elsewhere
    does not count)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JsonFormatter(logging.Formatter):
    """Formats a record as one redacted JSON object (no trailing newline); with
    ``journal``, prefixed by its journald priority."""

    def __init__(self, *, tracebacks: bool = False, journal: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        payload: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": event_name_of(record),
            "msg": record.getMessage(),
        }
        payload.update(_static_fields)
        for key, value in vars(record).items():
            if key in _RECORD_ATTRS or key.startswith("_") or key == "event_name":
                continue
            payload[f"extra_{key}" if key in _CORE_KEYS else key] = _jsonable(value)
        if record.exc_info and record.exc_info[1] is not None:
            payload["exc"] = describe_exception(record.exc_info[1])
            if self.tracebacks:
                payload["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        if self.tracebacks and record.stack_info:
            payload["stack"] = record.stack_info
        line = redact(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        return journal_prefix(record.levelno) + line if self.journal else line


def event_line(*, name: str, level: str, at: float, message: str, fields: Mapping[str, Any],
               logger: str = "aitbc_miner.engine") -> str:
    """An engine event (as ``ctl events`` receives it) as the log line the miner itself
    writes for it: the same schema, through the same formatter."""
    numeric = logging.getLevelName(level.upper())
    record = logging.LogRecord(logger, numeric if isinstance(numeric, int) else logging.INFO,
                               "", 0, message or name, (), None)
    record.created = at
    record.event_name = name
    for key, value in fields.items():
        setattr(record, f"{key}_" if key in _RECORD_ATTRS else key, value)
    return JsonFormatter().format(record)


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that treats a reader going away (EPIPE) as the end of output:
    the stream is pointed at /dev/null, ``on_closed`` runs once, and nothing is printed
    about it (no "--- Logging error ---" per line)."""

    def __init__(self, stream: TextIO, on_closed: Callable[[], None] | None) -> None:
        super().__init__(stream)
        self.on_closed = on_closed
        self.output_closed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not isinstance(sys.exc_info()[1], BrokenPipeError):
            super().handleError(record)
            return
        if self.output_closed:
            return
        self.output_closed = True
        try:  # later writes, and the flush at exit, go nowhere instead of failing
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError):
            pass
        if self.on_closed is not None:
            self.on_closed()


def setup_logging(
    level: str,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    *,
    file: Path | None = None,
    on_output_closed: Callable[[], None] | None = None,
) -> logging.Handler:
    """Send all logging to ``stream`` (default: the current ``sys.stdout``) as JSON lines,
    or to ``file``, rotated at ``LOG_FILE_MAX_BYTES`` with ``LOG_FILE_BACKUPS`` kept.

    ``level`` applies to the ``aitbc_miner`` loggers; other libraries log at WARNING and
    above. DEBUG also adds tracebacks. ``on_output_closed`` runs once if the stream's
    reader goes away. Calling it again replaces the earlier handler. Returns the
    installed handler.
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
    handler: logging.Handler
    journal = False
    if file is not None:
        handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
    else:
        out = sys.stdout if stream is None else stream
        handler = _StreamHandler(out, on_output_closed)
        journal = is_journal_stream(out)
    handler.setFormatter(JsonFormatter(tracebacks=numeric <= logging.DEBUG, journal=journal))
    handler.__dict__["_aitbc_miner"] = True  # marks ours, for the next setup to replace
    root.addHandler(handler)
    root.setLevel(max(numeric, THIRD_PARTY_LEVEL))
    logging.getLogger("aitbc_miner").setLevel(numeric)
    return handler


def log_event(logger: logging.Logger, level: int | str, event: str, msg: str | None = None,
              **fields: Any) -> None:
    """Log the stable ``event`` with the sentence ``msg`` (default: the name in words) and
    ``fields`` as JSON keys; a field named like a LogRecord attribute (``name``,
    ``module``, ...) is written with a trailing underscore."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    extra = {(f"{k}_" if k in _RECORD_ATTRS else k): v for k, v in fields.items()}
    extra["event_name"] = event
    logger.log(numeric, "%s", msg or event.replace("_", " "), extra=extra, stacklevel=2)
