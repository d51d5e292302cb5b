"""Snapshots and events to JSON and back, for viewers on the other side of a socket.

The encoding is plain (dataclasses become objects, enums their values, tuples lists;
events carry their stable ``event`` name) so ``ctl``, scripts and remote consoles read
the same thing. Decoding follows the dataclasses' own type hints, so a new snapshot
field travels without touching this module.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any

from ..journal import JobRecord
from ..money import amount_of
from .receipt_window import ReceiptWindow
from .snapshot import Event, ReceiptView, Snapshot


def to_jsonable(value: Any) -> Any:
    """Snapshots and events (frozen dataclasses, enums, tuples) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Event):
            data["event"] = value.name
        return data
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)  # money: exact, as text
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | ReceiptWindow):
        return [to_jsonable(v) for v in value]
    return value


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    snapshot: Snapshot = _decode(Snapshot, data)
    return snapshot


def receipt_from_json(data: dict[str, Any]) -> ReceiptView:
    receipt: ReceiptView = _decode(ReceiptView, data)
    return receipt


def job_from_json(data: dict[str, Any]) -> JobRecord:
    """A journal record (``Engine.job_record``) back from its JSON."""
    record: JobRecord = _decode(JobRecord, data)
    return record


def event_from_json(data: dict[str, Any]) -> Event | None:
    """The event, or None for a name this side does not know (a newer agent)."""
    cls = _event_classes().get(str(data.get("event")))
    return None if cls is None else _decode(cls, data)


@cache
def _event_classes() -> dict[str, type[Event]]:
    return {cls.name: cls for cls in Event.__subclasses__()}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any or value is None:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if origin is Sequence:  # a snapshot's receipts: a tuple on this side
        return tuple(_decode(typing.get_args(tp)[0], v) for v in value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=False))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return tp(**{f.name: _decode(hints[f.name], value[f.name])
                     for f in dataclasses.fields(tp) if f.name in value})
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    if tp is float and isinstance(value, int | float):
        return float(value)
    if tp is Decimal:
        return amount_of(value)
    return value
