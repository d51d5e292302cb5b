"""Where Textual's drawing keeps memory it no longer needs, and ``apply()``, which stops it.

(Found in Textual 8.2.8, the version ``pyproject.toml`` pins, and Rich 15.0.0, which it
brings.) Each fix returns what Textual returns; only what it kept is gone.
``tests/tui/test_garbage.py`` checks each, so a Textual or Rich that fixes or changes them
shows up there.

**Every drawn line was a reference cycle.** ``Strip.divide`` returns ``[self]`` when a line
needs no cut, and ``Strip.crop_extend`` returns ``self`` when the crop is the whole line;
both store that answer in the strip's own cache, so the strip refers to itself. Reference
counting then never frees a strip the compositor has drawn: each one, its segments and its
seven caches wait for Python's cycle collector. At five snapshots a second that was
~15,000 objects every 3 s, promoted into the oldest generation, whose collections walk the
whole heap: 80 to 180 ms on a small machine, in the path of whichever key was pressed then.
Those two cases are answered here without caching them.

**Every style drawn was kept, up to 16,384 of them.** ``Strip.render_ansi`` (a style's
escape codes) is an LRU cache keyed by the whole style, and a style's identity includes its
``meta``: the log line's option number and each cell's offset. So the log's lines kept
adding entries: 4,400 after 40 minutes of the demo (each a style, its meta and its link id,
about 540 bytes), toward a cap of about 8.5 MiB. The escape codes depend only on the
colours and attributes, so they are cached by those here: a few dozen entries, whatever is
drawn.

**Every line cut with a character Rich measures slowly was kept, up to 16,384 of them.**
Rich's ``Segment.split_cells`` caches its slow path (a line holding a character such as
``…`` or ``●``) by the segment, so each log line cut to the panel's width stayed in the
cache with both halves, about 1.1 KB each: 3,300 more an hour in the demo (3.6 MiB an hour,
for five hours). The same function is cached here with room for a few screens.

**Every style with a meta left a 4 KB hole in malloc's heap.** Rich and Textual keep a
style's ``meta`` (a click's action, a cell's row and column) pickled. ``pickle.dumps``
writes into a new 4 KB buffer, then shrinks it in place to the answer. So the answer, about
100 bytes, holds the start of a 4 KB block, and malloc keeps the rest free but too small
for the next 4 KB buffer. Each style kept in a cache held such a hole: in the demo, the
free memory malloc held went from 2.1 to 3.1 MiB between minutes 2 and 6, nearly all of it
4 KB pieces. Here the answer is copied into an object of its own size (Python's allocator
for small objects), and the 4 KB buffer is freed whole, for the next one to reuse: 0.75 to
0.78 MiB in the same minutes.

**Every point tested against a region was kept, up to 4,096 of them.** ``Region.__contains__``
is an LRU cache keyed by the region and the point, so each new pair (a scrolled log, a
moved cursor) stayed: 1,392 at minute 2 of the demo, 2,710 at minute 6. Testing a point is
four comparisons, cheaper than the cache's own lookup, so it is answered uncached here.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import rich.style
import textual.style
from rich.color import Color, ColorSystem
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip

_divide = Strip.divide
_crop_extend = Strip.crop_extend
_render_ansi = Strip.__dict__["render_ansi"].__func__.__wrapped__  # Textual's, uncached
_region_contains = getattr(Region.__contains__, "__wrapped__", Region.__contains__)

ANSI_CACHE_SIZE = 1024  # distinct colour/attribute combinations; a theme uses dozens
_ansi: dict[tuple[Color | None, Color | None, int, ColorSystem], str] = {}

SPLIT_CACHE_SIZE = 1024  # a few screens of cut segments
_split_cells: Any = lru_cache(SPLIT_CACHE_SIZE)(
    Segment.__dict__["_split_cells"].__func__.__wrapped__)  # Rich's, uncached


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


def _render_ansi_by_look(cls: type[Strip], style: Style, color_system: ColorSystem) -> str:
    """Textual's answer, cached by what it is computed from (not the style's meta)."""
    key = (style._color, style._bgcolor, style._attributes & style._set_attributes,
           color_system)
    if (ansi := _ansi.get(key)) is None:
        if len(_ansi) >= ANSI_CACHE_SIZE:
            _ansi.clear()
        ansi = _ansi[key] = _render_ansi(cls, style, color_system)
    style._ansi = ansi  # as Textual's does: the style remembers its own codes
    return ansi


def _meta_dumps(meta: object) -> bytes:
    """``pickle.dumps``, its answer in a block of its own size (see the module)."""
    return bytes(memoryview(pickle.dumps(meta)))


def apply() -> None:
    """Patch ``Strip``, ``Segment`` and the styles' pickling once per process
    (idempotent)."""
    patched: Any = Strip
    patched.divide = _divide_uncached_whole
    patched.crop_extend = _crop_extend_uncached_whole
    patched.render_ansi = classmethod(_render_ansi_by_look)
    segment: Any = Segment
    segment._split_cells = classmethod(_split_cells)
    region: Any = Region
    region.__contains__ = _region_contains  # Textual's, uncached
    for styles in (rich.style, textual.style):
        styles.dumps = _meta_dumps  # type: ignore[attr-defined]
