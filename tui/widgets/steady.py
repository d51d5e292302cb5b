"""A panel whose text changes often but whose size rarely does.

``Static.update`` lays the whole screen out again by default, because new text may need
a new size. The dashboard's panels get new text with every snapshot (five a second); a
layout pass each time made keys wait behind it. A ``SteadyStatic`` asks for a layout only
when its number of lines changes: its width is set by the layout, never by its text.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class SteadyStatic(Static):
    _line_count: int | None = None

    def show_content(self, content: Content) -> None:
        lines = content.plain.count("\n") + 1
        self.update(content, layout=lines != self._line_count)
        self._line_count = lines
