"""Theme colours as Rich styles, for the few places that bake styles into cells and lines.

Static panels use ``Content`` with ``$error``-style variables, which follow the theme on
their own; tables and the log hold Rich ``Text`` and are re-rendered on a theme change.
"""

from __future__ import annotations

from rich.style import Style as RichStyle
from textual.app import App
from textual.color import Color, ColorParseError


def theme_style(app: App[object], name: str, *, bold: bool = False,
                reverse: bool = False) -> RichStyle:
    value = app.theme_variables.get(name)
    color = None
    if value:
        try:
            color = Color.parse(value).rich_color
        except ColorParseError:
            color = None
    return RichStyle(color=color, bold=bold or None, reverse=reverse or None)


class Palette:
    """The handful of styles the tables and the log use, resolved for the current theme."""

    def __init__(self, app: App[object]) -> None:
        self.ok = theme_style(app, "success")
        self.warn = theme_style(app, "warning")
        self.error = theme_style(app, "error", bold=True)
        self.accent = theme_style(app, "accent")
        self.primary = theme_style(app, "primary")
        self.muted = RichStyle(dim=True)
        self.plain = RichStyle()
