"""Textual's ``Strip`` caches itself, which makes every drawn line cyclic garbage.

(Found in Textual 8.2.8, the version ``pyproject.toml`` pins.)

``Strip.divide`` returns ``[self]`` when a line needs no cut, and ``Strip.crop_extend``
returns ``self`` when the crop is the whole line; both store that answer in the strip's own
cache, so the strip refers to itself. Reference counting then never frees a strip the
compositor has drawn: each one, its segments and its seven caches wait for Python's cycle
collector. At five snapshots a second that was ~15,000 objects every 3 s, promoted into
the oldest generation, whose collections walk the whole heap: 80 to 180 ms on a small
machine, in the path of whichever key was pressed then.

``apply()`` answers those two cases without caching them. The answers are the same
objects Textual returns (the strip itself, in a new one-item list for ``divide``); only
the self-reference is gone. A test (``tests/tui/test_garbage.py``) checks that drawing the
console leaves no cyclic garbage, so a Textual that fixes or changes this shows up there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.style import Style
from textual.strip import Strip

_divide = Strip.divide
_crop_extend = Strip.crop_extend


def _divide_uncached_whole(self: Strip, cuts: Iterable[int]) -> Sequence[Strip]:
    cuts = list(cuts)
    if [cut for cut in cuts if cut <= self.cell_length] == [self.cell_length]:
        return [self]
    return _divide(self, cuts)


def _crop_extend_uncached_whole(self: Strip, start: int, end: int,
                                style: Style | None) -> Strip:
    if start == 0 and end == self.cell_length:
        return self
    return _crop_extend(self, start, end, style)


def apply() -> None:
    """Patch ``Strip`` once per process (idempotent)."""
    patched: Any = Strip
    patched.divide = _divide_uncached_whole
    patched.crop_extend = _crop_extend_uncached_whole
