"""Checks for what jobs and coordinator answers bring in, before any of it reaches SQLite,
a file path, a URL, a log line or a runner (the rules: docs/hostile-input.md).

- ``loads`` / ``loads_pruned``: JSON decoded within bounds on size and depth; anything
  else (not JSON, not UTF-8, too big, too deep) is ``Malformed``. NaN and Infinity are
  read as Python's json writes them (a coordinator echoes what a client sent); a payload
  holding one is refused by ``payload_problem``.
- ``payload_problem``: why a job's payload (or constraints) may not be run, or None.
- ``name_problem``: why a short name (a job type, a model) may not be used, or None.
- ``scrub``: free text from outside (an error detail, a message quoting a payload) made
  safe to store and show.

The job id rule is a wire fact and lives with the wire models (``protocol.is_job_id``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_ANSWER_BYTES = 16 << 20  # a coordinator answer longer than this is not read at all
MAX_ANSWER_DEPTH = 96  # nesting of an answer (a receipt nests the payload 3 levels deeper)
MAX_PAYLOAD_CHARS = 4 << 20  # string characters (keys included) plus one per value
MAX_PAYLOAD_DEPTH = 64  # nesting of a payload or constraints object (the object is 1)
MAX_NAME_CHARS = 256  # a job type or a model name
MAX_SCRUBBED_CHARS = 2000  # free text kept from outside (error details)

# A lone UTF-16 surrogate is legal in JSON text ("\ud800") but is not Unicode: it cannot
# be encoded as UTF-8 (SQLite, files, HTTP bodies). A NUL ends C strings (argv, env).
_BAD_CONTENT = re.compile(r"[\x00\ud800-\udfff]")
# Names also refuse what rewrites a line when shown: controls, line separators, bidi.
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SCRUB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                    r"\ud800-\udfff]")
# What the depth scan looks at: whole strings (brackets inside them do not count), brackets,
# and a quote that opens a string which never ends (the scan stops there).
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]', re.DOTALL)


class Malformed(ValueError):
    """JSON from outside that is not JSON, or is larger or deeper than allowed."""


# --- bounded decoding --------------------------------------------------------------


def loads(raw: bytes | str, *, max_bytes: int = MAX_ANSWER_BYTES,
          max_depth: int = MAX_ANSWER_DEPTH) -> Any:
    """Decode JSON, or raise ``Malformed``; never ``RecursionError``."""
    return _decode(raw, max_bytes, max_depth, prune=False)[0]


def loads_pruned(raw: bytes | str, *, max_bytes: int = MAX_ANSWER_BYTES,
                 max_depth: int = MAX_ANSWER_DEPTH) -> tuple[Any, bool]:
    """Like ``loads``, but arrays and objects nested deeper than ``max_depth`` become
    ``null`` instead of failing the whole text; the flag says whether any did.

    For an answer whose envelope is still worth reading (a poll answer names the job the
    coordinator now counts ours, so it can be failed even if its payload is hostile).
    """
    return _decode(raw, max_bytes, max_depth, prune=True)


def _decode(raw: bytes | str, max_bytes: int, max_depth: int,
            *, prune: bool) -> tuple[Any, bool]:
    size = len(raw)
    if size > max_bytes:
        raise Malformed(f"{size} bytes, over the limit of {max_bytes}")
    if isinstance(raw, bytes):
        try:
            text = raw.decode(json.detect_encoding(raw))
        except UnicodeDecodeError as exc:
            raise Malformed(f"not UTF-8 text ({exc.reason})") from None
    else:
        text = raw
    spans = _too_deep(text, max_depth)
    if spans and not prune:
        raise Malformed(f"nested deeper than {max_depth} levels")
    if spans:
        parts, last = [], 0
        for start, end in spans:
            parts += [text[last:start], "null"]
            last = end
        text = "".join(parts) + text[last:]
    try:
        value = json.loads(text)
    except RecursionError:  # the depth scan should make this impossible; be sure anyway
        raise Malformed(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, the int digit limit
        raise Malformed(str(exc)[:200]) from None
    return value, bool(spans)


def _too_deep(text: str, max_depth: int) -> list[tuple[int, int]]:
    """The (start, end) spans of the outermost containers nested deeper than ``max_depth``.

    Broken text (an unclosed string, unbalanced brackets) ends the scan early; the JSON
    decoder then reports it, never having gone deeper than ``max_depth`` on the way.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return []
    spans: list[tuple[int, int]] = []
    depth, start = 0, -1
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            if len(token) == 1:
                break
            continue
        if token in "[{":
            depth += 1
            if depth == max_depth + 1:
                start = match.start()
        else:
            if depth == max_depth + 1:
                spans.append((start, match.end()))
                start = -1
            depth -= 1
            if depth < 0:
                break
    if start >= 0:
        spans.append((start, len(text)))
    return spans


# --- what a job brings ---------------------------------------------------------------


def payload_problem(value: Any, *, what: str = "payload", max_depth: int = MAX_PAYLOAD_DEPTH,
                    max_chars: int = MAX_PAYLOAD_CHARS) -> str | None:
    """Why ``value`` (a decoded payload or constraints object) may not be run, or None.

    Walks without recursion: nesting up to ``max_depth`` (the object itself is level 1),
    size within ``max_chars``, plain JSON types only, finite numbers, and no string (key
    or value) holding a lone surrogate or a NUL. Other control characters are content
    (prompts have newlines) and are allowed.
    """
    if not isinstance(value, dict):
        return f"{what} is not a JSON object"
    size = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        size += 1
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"{what} is nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"{what} has a key that is not a string"
                    if _BAD_CONTENT.search(key):
                        return f"{what} has a key with a NUL or a lone UTF-16 surrogate"
                    size += len(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if _BAD_CONTENT.search(item):
                return f"{what} has a string with a NUL or a lone UTF-16 surrogate"
            size += len(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{what} has a number that is not finite"
        elif item is not None and not isinstance(item, int):  # bool is an int
            return f"{what} holds a {type(item).__name__}, which is not JSON"
        if size > max_chars:
            return f"{what} is larger than {max_chars} characters"
    return None


def name_problem(value: str, *, max_chars: int = MAX_NAME_CHARS) -> str | None:
    """Why a short name from outside (job type, model) may not be stored or shown, or None:
    empty, longer than ``max_chars``, or holding control characters, line separators,
    bidi overrides or lone surrogates."""
    if not value:
        return "is empty"
    if len(value) > max_chars:
        return f"is longer than {max_chars} characters"
    if _BAD_NAME.search(value):
        return "holds control characters or lone UTF-16 surrogates"
    return None


def scrub(text: str, *, max_chars: int = MAX_SCRUBBED_CHARS) -> str:
    """Free text from outside, safe to store (SQLite, UTF-8 files) and to show: lone
    surrogates, NUL and other controls but tab and newline become U+FFFD; cut to
    ``max_chars``."""
    if len(text) > max_chars:
        text = text[:max_chars] + "…"
    return _SCRUB.sub("\ufffd", text)
