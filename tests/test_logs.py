"""JSON-lines logging: one parseable object per line, extra fields, exceptions, redaction."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package may not be installed in the venv
    sys.path.insert(0, str(ROOT))

from aitbc_miner import logs  # noqa: E402
from aitbc_miner.logs import add_secret, log_event, redact, setup_logging  # noqa: E402

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
log = logging.getLogger("aitbc_miner.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state; put it back after each test."""
    root, package = logging.getLogger(), logging.getLogger("aitbc_miner")
    saved = (root.handlers[:], root.level, package.level)
    yield
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
    root.setLevel(saved[1])
    package.setLevel(saved[2])


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


def test_each_record_is_one_json_object_with_core_and_extra_fields(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log.info("claimed job\nsecond line", extra={"job_id": "j-1", "slot": "cpu:0", "attempt": 2})
    [line] = lines(stream)
    assert TS.match(line["ts"])
    assert line["level"] == "INFO" and line["logger"] == "aitbc_miner.test"
    assert line["event"] == "claimed job\nsecond line"
    assert (line["job_id"], line["slot"], line["attempt"]) == ("j-1", "cpu:0", 2)
    assert "exc" not in line


def test_log_event_passes_fields_and_survives_reserved_names(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log_event(log, "warning", "retrying", delay_s=1.5, endpoint="/v1/poll", status=503,
              code=None, name="clash", path=Path("/x"))
    [line] = lines(stream)
    assert line["level"] == "WARNING" and line["event"] == "retrying"
    assert line["delay_s"] == 1.5 and line["endpoint"] == "/v1/poll" and line["status"] == 503
    assert line["code"] is None and line["name_"] == "clash" and line["path"] == "/x"


def test_extra_fields_never_replace_core_fields(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log.info("hello", extra={"level": "fake", "ts": "then", "obj": object()})
    [line] = lines(stream)
    assert line["level"] == "INFO" and line["extra_level"] == "fake" and TS.match(line["ts"])
    assert line["obj"].startswith("<object object")


def test_levels_package_at_configured_level_libraries_at_warning(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log.debug("hidden")
    logging.getLogger("httpx").info("HTTP Request: POST ...")
    logging.getLogger("httpx").warning("library warning")
    log.info("shown")
    assert [line["event"] for line in lines(stream)] == ["library warning", "shown"]


def test_exception_is_one_line_without_traceback_above_debug(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    try:
        try:
            raise OSError("connection refused")
        except OSError as exc:
            raise RuntimeError("submit failed\non two lines") from exc
    except RuntimeError:
        log.exception("outbox retry")
    [line] = lines(stream)
    assert line["level"] == "ERROR"
    assert line["exc"] == (
        "RuntimeError: submit failed on two lines (caused by OSError: connection refused)"
    )
    assert "traceback" not in line


def test_debug_adds_the_traceback(stream: io.StringIO) -> None:
    setup_logging("debug", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        log.debug("details", exc_info=True)
    [line] = lines(stream)
    assert line["exc"] == "ValueError: boom"
    assert line["traceback"].startswith("Traceback")
    assert "test_debug_adds_the_traceback" in line["traceback"]


def test_calling_setup_twice_keeps_one_handler(stream: io.StringIO) -> None:
    first = io.StringIO()
    setup_logging("INFO", stream=first)
    setup_logging("INFO", stream=stream)
    log.info("once")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_aitbc_miner", False)]
    assert len(ours) == 1
    assert first.getvalue() == "" and len(lines(stream)) == 1


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("LOUD", stream=io.StringIO())


# --- redaction -------------------------------------------------------------------------


def test_secret_is_redacted_in_message_extra_and_exception(stream: io.StringIO) -> None:
    secret = "sk_miner_4f/8+Yq\"z"
    setup_logging("DEBUG", stream=stream, secrets=[secret])
    log.info("using key %s", secret, extra={"headers": {"Authorization": f"Bearer {secret}"}})
    log.warning("request to https://c.example/v1/poll?key=%s", secret.replace("/", "%2F")
                .replace("+", "%2B").replace('"', "%22"))
    try:
        raise PermissionError(f"401 for key {secret}")
    except PermissionError:
        log.exception("register failed", extra={"attempt": 1, "keys": [secret]})
    text = stream.getvalue()
    assert secret not in text and json.dumps(secret)[1:-1] not in text
    assert "sk_miner_4f" not in text
    first, second, third = lines(stream)
    assert first["event"] == "using key ***" and first["headers"] == {"Authorization": "Bearer ***"}
    assert second["event"] == "request to https://c.example/v1/poll?key=***"
    assert third["exc"] == "PermissionError: 401 for key ***" and third["keys"] == ["***"]
    assert "***" in third["traceback"]


def test_secret_added_after_setup_is_redacted_too(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log.info("before: late-secret-1234")
    add_secret("late-secret-1234")
    log.info("after: late-secret-1234")
    before, after = lines(stream)
    assert before["event"] == "before: late-secret-1234"  # not known yet
    assert after["event"] == "after: ***"


def test_redact_ignores_empty_values_and_prefers_longest_match() -> None:
    add_secret("")
    add_secret(None)
    add_secret("abcd-secret")
    add_secret("abcd-secret-longer")
    assert redact("x abcd-secret-longer y") == "x *** y"
    assert redact("nothing here") == "nothing here"
    assert "" not in logs._secrets
