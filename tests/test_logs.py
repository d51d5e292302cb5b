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
    assert line["msg"] == "claimed job\nsecond line"
    assert line["event"] == "claimed_job_second_line"  # a name, made from the template
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
    assert [line["msg"] for line in lines(stream)] == ["library warning", "shown"]


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
    assert first["msg"] == "using key ***" and first["headers"] == {"Authorization": "Bearer ***"}
    assert second["msg"] == "request to https://c.example/v1/poll?key=***"
    assert third["exc"] == "PermissionError: 401 for key ***" and third["keys"] == ["***"]
    assert "***" in third["traceback"]


def test_secret_added_after_setup_is_redacted_too(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log.info("before: late-secret-1234")
    add_secret("late-secret-1234")
    log.info("after: late-secret-1234")
    before, after = lines(stream)
    assert before["msg"] == "before: late-secret-1234"  # not known yet
    assert after["msg"] == "after: ***"


def test_redact_ignores_empty_values_and_prefers_longest_match() -> None:
    add_secret("")
    add_secret(None)
    add_secret("abcd-secret")
    add_secret("abcd-secret-longer")
    assert redact("x abcd-secret-longer y") == "x *** y"
    assert redact("nothing here") == "nothing here"
    assert "" not in logs._secrets


# --- one schema, every line ---------------------------------------------------------------

CORE = ("ts", "level", "logger", "event", "msg")
NAME = re.compile(r"^[a-z0-9_]+$")


def test_every_kind_of_line_has_the_same_core_keys_and_a_name_for_event(
        stream: io.StringIO) -> None:
    setup_logging("DEBUG", stream=stream)
    log.info("cannot prune job folders: %s; next try in %.0fs", "EACCES", 60.0)
    log.warning("%s", "a standing warning")  # a template with no words of its own
    log.info("claimed job j-1", extra={"event_name": "job_claimed", "job_id": "j-1"})
    log_event(log, "info", "metrics_listening", "serving metrics", address="127.0.0.1:9")
    logging.getLogger("httpx").warning("Connection pool is full")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("could not %s", "parse")
    out = lines(stream)
    assert len(out) == 6
    for line in out:
        assert all(key in line for key in CORE), line
        assert NAME.match(line["event"]), line["event"]
        assert line["msg"] and " " not in line["event"]
    assert [line["event"] for line in out] == [
        "cannot_prune_job_folders_next_try", "test_warning", "job_claimed",
        "metrics_listening", "connection_pool_is_full", "could_not"]
    assert out[0]["msg"] == "cannot prune job folders: EACCES; next try in 60s"
    assert out[3]["msg"] == "serving metrics" and out[3]["address"] == "127.0.0.1:9"


def test_the_name_stays_the_same_whatever_the_arguments(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    for job in ("j-1", "another job with words"):
        log.warning("job %s: result.json cannot be written", job)
    first, second = lines(stream)
    assert first["event"] == second["event"] == "job_result_json_cannot_be_written"
    assert first["msg"] != second["msg"]


def test_a_ctl_event_line_is_the_log_line_the_miner_writes(stream: io.StringIO) -> None:
    setup_logging("INFO", stream=stream)
    log.warning("job j-1: /result attempt 2: 503", extra={
        "event_name": "delivery_problem", "job_id": "j-1", "attempt": 2})
    [written] = lines(stream)
    shown = json.loads(logs.event_line(
        name="delivery_problem", level="WARNING", at=0.0,
        message="job j-1: /result attempt 2: 503", fields={"job_id": "j-1", "attempt": 2}))
    assert set(shown) == set(written)
    assert {k: shown[k] for k in ("level", "event", "msg", "job_id", "attempt")} == {
        k: written[k] for k in ("level", "event", "msg", "job_id", "attempt")}
    assert shown["ts"] == "1970-01-01T00:00:00.000Z" and shown["logger"] == "aitbc_miner.engine"


# --- the cause of an exception group --------------------------------------------------------


def test_an_exception_group_is_logged_as_its_causes(stream: io.StringIO) -> None:
    setup_logging("ERROR", stream=stream)
    inner = RuntimeError("journal write failed")
    inner.__cause__ = OSError(28, "No space left on device")
    try:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [
            inner, ExceptionGroup("nested", [KeyError("slot")])])
    except ExceptionGroup:
        log.exception("fatal error")
    [line] = lines(stream)
    assert line["exc"] == ("RuntimeError: journal write failed (caused by OSError: [Errno 28] "
                           "No space left on device); KeyError: 'slot'")
    assert "sub-exception" not in json.dumps(line)


def test_a_fatal_error_names_its_cause_at_any_level(stream: io.StringIO) -> None:
    from aitbc_miner.host import cli

    setup_logging("ERROR", stream=stream)  # the quietest level there is
    group = ExceptionGroup("unhandled errors in a TaskGroup (1 sub-exception)",
                           [PermissionError(13, "Permission denied", "/var/lib/x/journal")])
    assert cli._fatal(group, None) == 1
    [line] = lines(stream)
    assert line["level"] == "ERROR" and line["event"] == "fatal_error"
    assert line["msg"] == ("fatal error: PermissionError: [Errno 13] Permission denied: "
                           "'/var/lib/x/journal'; exiting")
    assert "traceback" not in line  # at DEBUG only


# --- journald priorities ----------------------------------------------------------------------

EMIT_ONE_OF_EACH = """
import logging, sys
sys.path.insert(0, sys.argv[1])
from aitbc_miner.logs import setup_logging
setup_logging("DEBUG")
log = logging.getLogger("aitbc_miner.x")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e"); log.critical("c")
"""


def _run_with_stdout_pipe(journal_stream: str | None) -> list[str]:
    """Run the child with stdout on a pipe; ``JOURNAL_STREAM`` names that pipe (``"pipe"``),
    something else, or is unset."""
    import os
    import subprocess

    read, write = os.pipe()
    st = os.fstat(write)
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream == "pipe":
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    elif journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with os.fdopen(read, encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-c", EMIT_ONE_OF_EACH, str(ROOT)], stdout=write,
                                env=env)
        os.close(write)
        text = out.read()
    assert proc.wait(timeout=60) == 0
    return text.splitlines()


def test_under_systemd_each_line_carries_its_journald_priority() -> None:
    # Given stdout is the journal stream systemd named (a real pipe standing in for it)
    out = _run_with_stdout_pipe("pipe")
    # Then each line starts with its sd-daemon(3) priority, then the JSON
    assert [line[:4] for line in out] == ["<7>{", "<6>{", "<4>{", "<3>{", "<2>{"]
    assert [json.loads(line[3:])["level"] for line in out] == [
        "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@pytest.mark.parametrize("journal_stream", [None, "8:12345", "garbage"])
def test_elsewhere_lines_are_plain_json(journal_stream: str | None) -> None:
    # Given stdout is not the journal (no variable, or one inherited for another stream)
    out = _run_with_stdout_pipe(journal_stream)
    # Then lines are bare JSON
    assert [json.loads(line)["msg"] for line in out] == ["d", "i", "w", "e", "c"]


# --- the console's log file is rotated ----------------------------------------------------------


def test_the_log_file_is_rotated_and_bounded(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "LOG_FILE_MAX_BYTES", 2000)
    monkeypatch.setattr(logs, "LOG_FILE_BACKUPS", 2)
    path = tmp_path / "aitbc-miner.log"
    handler = setup_logging("INFO", file=path)
    try:
        for i in range(200):
            log.info("line %d with some words to fill the file", i)
    finally:
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["aitbc-miner.log", "aitbc-miner.log.1", "aitbc-miner.log.2"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert 0 < size <= 2000, (name, size)
        for text in (tmp_path / name).read_text(encoding="utf-8").splitlines():
            assert json.loads(text)["event"] == "line_with_some_words_to_fill"
    newest = (tmp_path / "aitbc-miner.log").read_text(encoding="utf-8").splitlines()
    assert json.loads(newest[-1])["msg"].startswith("line 199 ")


def test_the_default_rotation_is_ten_mib_times_five() -> None:
    assert (logs.LOG_FILE_MAX_BYTES, logs.LOG_FILE_BACKUPS) == (10 * 1024 * 1024, 5)


# --- a reader that goes away -------------------------------------------------------------------


def test_a_closed_stdout_ends_output_once_and_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    # Given logs going to a pipe whose reader has gone
    read, write = os.pipe()
    os.close(read)
    out = os.fdopen(write, "w", encoding="utf-8")
    closed: list[bool] = []
    handler = setup_logging("INFO", stream=out, on_output_closed=lambda: closed.append(True))
    try:
        # When the miner goes on logging
        for i in range(5):
            log.info("line %d", i)
    finally:
        logging.getLogger().removeHandler(handler)
        out.close()
    # Then it was told once, and nothing was printed about it
    assert closed == [True]
    assert "Logging error" not in capfd.readouterr().err
