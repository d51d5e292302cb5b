"""The newest receipts, newest first: held compactly, and shared between snapshots.

The engine keeps the last ``RECENT_RECEIPTS`` receipts for the console's table, and every
snapshot carries them. Kept as a deque of :class:`ReceiptView` objects, 10,000 receipts
took about 5 MiB (each a view, two id strings, two floats and a ``Decimal``), and each
snapshot copied them into a new 80 KB tuple, five times a second. While the deque filled
(half an hour at the demo's rate), each copy was a little larger than the last, so malloc
could not reuse the last one's memory and its free-but-held memory grew with them.

A :class:`ReceiptWindow` is immutable. Its receipts lie oldest first in chunks of
``CHUNK``. Once a chunk is full, its fields are packed into one ``bytes`` object with
``marshal`` and compressed with ``zlib``: about 65 bytes a receipt, against about 120
packed alone and 420 as objects (the verdicts, unit types and prices repeat, and the hex
ids compress to about half). A new receipt makes a new window that shares every packed
chunk with the one before it, so a snapshot costs ``O(CHUNK)`` however many receipts it
holds, and each object it makes is small.
Reading a packed receipt unpacks its chunk (cached for the few chunks a screen shows).
"""

from __future__ import annotations

import marshal
import zlib
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from itertools import islice
from typing import overload

from .snapshot import ReceiptView

CHUNK = 32  # receipts per packed chunk: the newest up to 31 stay views until one fills
UNPACKED = 16  # unpacked chunks cached: what a screen (and a page either side) shows

Row = tuple[str, str, float, float | None, str | None, str | None, str, str, bool, bool]


def _row(r: ReceiptView) -> Row:
    return (r.receipt_id, r.job_id, r.received_at, r.units, r.unit_type,
            None if r.price is None else str(r.price), r.verdict, r.reason, r.counted,
            r.duplicate)


def _pack(receipts: Sequence[ReceiptView]) -> bytes:
    return zlib.compress(marshal.dumps(tuple(_row(r) for r in receipts)), 1)


@lru_cache(maxsize=UNPACKED)
def _unpack(chunk: bytes) -> tuple[ReceiptView, ...]:
    rows: tuple[Row, ...] = marshal.loads(zlib.decompress(chunk))
    return tuple(ReceiptView(rid, job, at, units, unit_type,
                             None if price is None else Decimal(price), verdict, reason,
                             counted, duplicate)
                 for rid, job, at, units, unit_type, price, verdict, reason, counted, duplicate
                 in rows)


class ReceiptWindow(Sequence[ReceiptView]):
    """At most ``limit`` receipts, newest first (index 0 is the newest)."""

    __slots__ = ("_fresh", "_len", "_packed", "limit")

    def __init__(self, limit: int, *, _packed: tuple[bytes, ...] = (),
                 _fresh: tuple[ReceiptView, ...] = ()) -> None:
        if limit < 1:
            raise ValueError("a receipt window holds at least one receipt")
        self.limit = limit
        self._packed = _packed  # full chunks, oldest first
        self._fresh = _fresh  # newer than every packed one, oldest first; < CHUNK of them
        self._len = min(limit, CHUNK * len(_packed) + len(_fresh))

    @classmethod
    def of(cls, receipts: Iterable[ReceiptView], limit: int) -> ReceiptWindow:
        """The window of ``receipts``, given oldest first."""
        return cls(limit).extend(receipts)

    def push(self, receipt: ReceiptView) -> ReceiptWindow:
        """This window with ``receipt`` as the newest; the oldest beyond ``limit`` go."""
        fresh, packed = (*self._fresh, receipt), self._packed
        if len(fresh) == CHUNK:
            packed, fresh = (*packed, _pack(fresh)), ()
            if CHUNK * (len(packed) - 1) >= self.limit:  # the oldest chunk is out of sight
                packed = packed[1:]
        return ReceiptWindow(self.limit, _packed=packed, _fresh=fresh)

    def extend(self, receipts: Iterable[ReceiptView]) -> ReceiptWindow:
        """This window with ``receipts`` (oldest first) pushed in turn."""
        window = self
        for receipt in receipts:
            window = window.push(receipt)
        return window

    def without(self, receipt_id: str) -> ReceiptWindow:
        """This window less the receipt stored under ``receipt_id`` (a receipt stored again
        replaces its row). Looked for from the newest, where a replaced receipt usually is;
        only the chunks from its own onwards are packed again."""
        newer = 0
        for receipt in self:
            if receipt.receipt_id == receipt_id:
                break
            newer += 1
        else:
            return self
        fresh = self._fresh
        if newer < len(fresh):
            at = len(fresh) - 1 - newer
            return ReceiptWindow(self.limit, _packed=self._packed,
                                 _fresh=fresh[:at] + fresh[at + 1:])
        chunk = len(self._packed) - 1 - (newer - len(fresh)) // CHUNK
        kept = ReceiptWindow(self.limit, _packed=self._packed[:chunk])
        rest = (r for packed in self._packed[chunk:] for r in _unpack(packed))
        return kept.extend((*(r for r in rest if r.receipt_id != receipt_id), *fresh))

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> ReceiptView: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[ReceiptView, ...]: ...

    def __getitem__(self, index: int | slice) -> ReceiptView | tuple[ReceiptView, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            if step == 1:
                return tuple(islice(self, start, max(start, stop)))
            return tuple(self[i] for i in range(start, stop, step))
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("receipt window index out of range")
        fresh = self._fresh
        if index < len(fresh):
            return fresh[-1 - index]
        back, at = divmod(index - len(fresh), CHUNK)
        return _unpack(self._packed[-1 - back])[-1 - at]

    def __iter__(self) -> Iterator[ReceiptView]:
        return islice(self._newest_first(), self._len)

    def _newest_first(self) -> Iterator[ReceiptView]:
        yield from reversed(self._fresh)
        for chunk in reversed(self._packed):
            yield from reversed(_unpack(chunk))

    def __reversed__(self) -> Iterator[ReceiptView]:
        """Oldest first."""
        hidden = CHUNK * len(self._packed) + len(self._fresh) - self._len
        oldest_first = (r for chunk in self._packed for r in _unpack(chunk))
        yield from islice(oldest_first, hidden, None)
        yield from self._fresh[max(0, hidden - CHUNK * len(self._packed)):]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, ReceiptWindow | tuple | list):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ReceiptWindow({self._len} of at most {self.limit})"
