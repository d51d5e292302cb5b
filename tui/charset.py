"""One switch, decided at start: draw with UTF-8 characters, or with plain ASCII.

Under a locale whose encoding is not UTF-8 (``LANG=C``, a serial console) box drawing,
``·``, ``…`` and sparkline blocks arrive as junk. There the console adds ``AsciiFilter``
to its line filters: every cell it draws (borders, separators, glyphs, Textual's own
widgets) is mapped to one ASCII character of the same width, so the layout is unchanged.
"""

from __future__ import annotations

import locale
import os
from collections.abc import Mapping

from rich.cells import cell_len
from rich.segment import Segment
from textual.color import Color
from textual.filter import LineFilter

#: One cell for one cell. Anything else outside ASCII becomes ``?``.
ASCII_OF = {
    **dict.fromkeys("─━═┄┈╌╴╶╸╺▔▁", "-"),
    **dict.fromkeys("│┃║┆┊╎╵╷╹╻▏▕", "|"),
    **dict.fromkeys("╭╮╰╯┌┐└┘┏┓┗┛╔╗╚╝├┤┬┴┼┣┫┳┻╋╠╣╦╩╬", "+"),
    "·": ".", "…": "~", "•": "*", "●": "*", "○": "o", "◌": "o", "◐": "@", "‖": "=",
    "✓": "v", "✗": "x", "▲": "^", "▼": "v", "▶": ">", "◀": "<", "⏎": "<", "≥": ">",
    "°": "o", "↑": "^", "↓": "v", "←": "<", "→": ">", "░": ".", "▒": ":", "▓": "#",
    "█": "#", "▂": "_", "▃": ".", "▄": ":", "▅": "=", "▆": "+", "▇": "*", "▊": "#",
    "▌": "|", "▐": "|", "▀": "-", "\u00a0": " ",
}


def unicode_ok(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the locale's encoding is UTF-8: ``LC_ALL``, then ``LC_CTYPE``, then
    ``LANG`` (the first one set decides), else Python's preferred encoding."""
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(name, "")
        if value:
            return value.lower().replace("-", "").endswith("utf8") or ".utf8@" in (
                value.lower().replace("-", ""))
    return locale.getpreferredencoding(False).lower().replace("-", "") == "utf8"


def to_ascii(text: str) -> str:
    if text.isascii():
        return text
    return "".join(ch if ch.isascii() else ASCII_OF.get(ch, "?" if cell_len(ch) == 1 else "??")
                   for ch in text)


class AsciiFilter(LineFilter):
    """Every drawn character in ASCII, cell for cell (see ``ASCII_OF``)."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [Segment(to_ascii(text), style, control) if not control else
                Segment(text, style, control) for text, style, control in segments]
