"""The engine's receipt window: a sequence like the deque it replaced, held compactly, and
shared between snapshots instead of copied into each."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections import deque
from decimal import Decimal

import pytest

from aitbc_miner.engine.codec import snapshot_from_json, to_jsonable
from aitbc_miner.engine.receipt_window import CHUNK, ReceiptWindow
from aitbc_miner.engine.snapshot import ReceiptView
from tui.fake import receipts, sample_snapshot


def receipt(n: int) -> ReceiptView:
    """Ids as random as the coordinator's (hex of 16 random bytes), but the same each run."""
    return ReceiptView(receipt_id=_hex(f"r{n}"), job_id=_hex(f"j{n}"),
                       received_at=1_790_000_000.0 + n / 7, units=None if n % 5 == 0 else n / 3,
                       unit_type="gpu_seconds", price=None if n % 9 == 0 else Decimal(n) / 10_000,
                       verdict="valid_pinned", reason="" if n % 4 else "why\u2028\udcff",
                       counted=n % 3 != 0, duplicate=n % 11 == 0)


def _hex(seed: str) -> str:
    return hashlib.blake2b(seed.encode(), digest_size=16).hexdigest()


@pytest.mark.parametrize("limit", [1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, 1000])
def test_it_reads_like_a_deque_of_the_newest(limit: int) -> None:
    window = ReceiptWindow(limit)
    reference: deque[ReceiptView] = deque(maxlen=limit)  # newest first, as the engine had it
    for n in range(3 * limit + 2 * CHUNK + 3):
        before = window
        window = window.push(receipt(n))
        reference.appendleft(receipt(n))
        assert len(before) == min(limit, n)  # a window never changes once made
        expected = tuple(reference)
        assert len(window) == len(expected)
        assert window[0] == expected[0] and window[-1] == expected[-1]
        if n % 7 == 0 or n > 3 * limit:
            assert tuple(window) == expected
            assert tuple(reversed(window)) == expected[::-1]
            assert [window[i] for i in range(-len(expected), len(expected))] == [
                *expected, *expected]
            assert window[2:9] == expected[2:9] and window[::3] == expected[::3]
            assert window == expected and window == list(expected)
    with pytest.raises(IndexError):
        window[len(window)]
    with pytest.raises(IndexError):
        window[-len(window) - 1]
    assert ReceiptWindow.of(reversed(tuple(window)), limit) == window


def test_it_holds_no_more_than_two_chunks_beyond_its_limit() -> None:
    window = ReceiptWindow(100).extend(receipt(n) for n in range(10_000))
    assert len(window) == 100 and window[0] == receipt(9999) and window[-1] == receipt(9900)
    assert len(window._packed) * CHUNK + len(window._fresh) < 100 + 2 * CHUNK


def allocated(make: object) -> int:
    """Bytes still held by what ``make()`` returns (Python's allocations, deterministic)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()  # type: ignore[operator]
        size = tracemalloc.get_traced_memory()[0] - before
        del kept
        return size
    finally:
        tracemalloc.stop()


def test_ten_thousand_receipts_take_a_sixth_of_what_they_took_as_views() -> None:
    """0.67 MB against 4.2 MB (packed without compression: 1.2 MB)."""
    as_views = allocated(lambda: deque((receipt(n) for n in range(10_000)), maxlen=10_000))
    as_window = allocated(lambda: ReceiptWindow(10_000).extend(receipt(n) for n in range(10_000)))
    assert as_window * 6 < as_views, (as_window, as_views)


def test_a_new_receipt_shares_the_window_instead_of_copying_it() -> None:
    full = ReceiptWindow(10_000).extend(receipt(n) for n in range(10_000))
    new = receipt(10_000)
    for n in range(CHUNK):  # whichever push packs a chunk, none copies the 10,000
        size = allocated(lambda: full.push(new))  # noqa: B023
        assert size < 8_000, (n, size)  # a tuple of 10,000 references alone is 80,000 bytes
        full = full.push(receipt(10_001 + n))


def test_snapshots_share_the_engines_window_and_travel_as_a_list() -> None:
    window = ReceiptWindow.of(reversed(receipts(70)), 10_000)
    snap = sample_snapshot("busy", n_receipts=0)
    snap = type(snap)(**{**{f: getattr(snap, f) for f in snap.__slots__}, "receipts": window})
    again = snapshot_from_json(to_jsonable(snap))
    assert again.receipts == tuple(window) and isinstance(again.receipts, tuple)
    assert again == snap  # a window equals the tuple it reads as, both ways


@pytest.mark.parametrize("limit", [5, CHUNK, 3 * CHUNK + 7, 1000])
def test_a_receipt_taken_out_leaves_the_others_in_order(limit: int) -> None:
    for count in (3, limit, 2 * limit + CHUNK + 5):
        window = ReceiptWindow.of((receipt(n) for n in range(count)), limit)
        shown, newest_first = tuple(window), tuple(receipt(n) for n in reversed(range(count)))
        for index in sorted({0, 1, CHUNK - 1, CHUNK, CHUNK + 3, len(shown) // 2,
                             len(shown) - 1}):
            if index >= len(shown):
                continue
            gone = shown[index].receipt_id
            taken = window.without(gone)
            # the newest that are left: the one taken out may uncover the next older one
            left = tuple(r for r in newest_first if r.receipt_id != gone)
            assert len(shown) - 1 <= len(taken) <= len(shown), (count, index)
            assert tuple(taken) == left[:len(taken)], (count, index)
            after = taken.push(receipt(10**6))  # and it goes on taking receipts
            assert after[0] == receipt(10**6) and tuple(after)[1:] == left[:len(after) - 1]
        assert window.without("not there") is window
