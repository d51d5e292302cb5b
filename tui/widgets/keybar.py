"""The bottom line of keys: what each key does on this screen now.

Textual's ``Footer`` builds one widget per key, and builds them all again each time the
bindings change, which on this console is every pause and resume. That rebuild is a
stylesheet and layout pass over twenty new widgets in the path of the key that caused it.
Worse, each new key is bound to the footer's ``compact`` reactive, and Textual drops those
watchers only when ``compact`` next changes: every rebuilt key stayed alive (about twenty
widgets and their render caches per pause, the console's steady memory growth, and the
cyclic garbage whose collections stalled keys by up to 0.2 s).

``KeyBar`` draws the same line as one text. A change of bindings costs one render of one
line, and only when the line differs. A click on a key presses it (a disabled key rings
the bell); hovering shows a key's tooltip.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual import events
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget


@dataclass(frozen=True)
class BarKey:
    key: str  # as Textual names it, for pressing
    display: str  # as drawn: "p", "⏎", "^p"
    description: str
    enabled: bool
    tooltip: str
    right: bool = False  # the command palette's key, drawn at the right end


class KeyBar(Widget, can_focus=False):
    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"keybar--key", "keybar--description", "keybar--hover"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $panel;
        & > .keybar--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .keybar--description {
            color: $footer-description-foreground;
        }
        & > .keybar--hover {
            background: $block-hover-background;
        }
    }
    """

    show_command_palette = reactive(True)
    """Whether the command palette's key is drawn at the right end (not at 80 columns)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._keys: tuple[BarKey, ...] = ()
        self._spans: list[tuple[int, int, BarKey]] = []  # drawn cells [start, end) per key
        self._hover: BarKey | None = None

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def watch_show_command_palette(self) -> None:
        if self.is_mounted:
            self._bindings_changed(self.screen)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        keys = self._current_keys(screen)
        if keys != self._keys:
            self._keys = keys
            self.refresh()

    def _current_keys(self, screen: Screen[object]) -> tuple[BarKey, ...]:
        """The shown bindings, one per action (the first key bound to it), in order."""
        app = self.app
        keys: list[BarKey] = []
        actions: set[str] = set()
        palette: BarKey | None = None
        for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items():
            if key == app.COMMAND_PALETTE_BINDING and app.ENABLE_COMMAND_PALETTE:
                palette = BarKey(binding.key, app.get_key_display(binding),
                                 binding.description, enabled,
                                 binding.tooltip or binding.description, right=True)
                continue
            if not binding.show or binding.action in actions:
                continue
            actions.add(binding.action)
            keys.append(BarKey(binding.key, app.get_key_display(binding),
                               binding.description, enabled, tooltip))
        if palette is not None and self.show_command_palette:
            keys.append(palette)
        return tuple(keys)

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keybar--key", partial=True)
        text_style = self.get_component_rich_style("keybar--description", partial=True)
        hover = self.get_component_rich_style("keybar--hover", partial=True)
        line = Text(no_wrap=True, overflow="crop")
        spans: list[tuple[int, int, BarKey]] = []
        left = [k for k in self._keys if not k.right]
        right = [k for k in self._keys if k.right]

        def draw(key: BarKey) -> None:
            start = line.cell_len
            extra = hover if key == self._hover else Style()
            dim = Style(dim=not key.enabled)
            line.append(key.display, key_style + extra + dim)
            if key.description:
                line.append(" " + key.description, text_style + extra + dim)
            spans.append((start, line.cell_len, key))

        for key in left:
            draw(key)
            line.append(" ")
        if right:
            room = self.size.width - line.cell_len - sum(
                len(k.display) + len(k.description) + 2 for k in right)
            line.append(" " * max(room, 0))
            for key in right:
                line.append("▏", text_style + Style(dim=True))
                draw(key)
        self._spans = spans
        return line

    def _key_at(self, x: int) -> BarKey | None:
        return next((key for start, end, key in self._spans if start <= x < end), None)

    def on_click(self, event: events.Click) -> None:
        key = self._key_at(event.x)
        if key is None:
            return
        event.stop()
        if key.enabled:
            self.app.simulate_key(key.key)
        else:
            self.app.bell()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self._set_hover(self._key_at(event.x))

    def on_leave(self) -> None:
        self._set_hover(None)

    def _set_hover(self, key: BarKey | None) -> None:
        if key != self._hover:
            self._hover = key
            self.tooltip = (key.tooltip or None) if key else None
            self.refresh()
