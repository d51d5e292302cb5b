"""Console themes: TOML files from the ``themes/`` folder, and the operator's choice.

Installed (``pip install .``), the files are the package data of ``tui.themes`` (the
top-level ``themes/`` folder mapped into the package); in a source checkout they are
read from ``themes/`` beside ``tui/``. The choice made with ``t`` is remembered in a
small JSON file in the user's state folder (``$XDG_STATE_HOME/aitbc-miner``).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import tomllib
from collections.abc import Iterable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path

from textual.theme import Theme

log = logging.getLogger("aitbc_miner.console")

DEFAULT_THEME = "aitbc-dark"
#: The theme for terminals with fewer than 256 colours: the terminal's own 16.
ANSI_THEME = "aitbc-ansi"
#: The order ``t`` cycles through (any other registered theme still works by name).
CYCLE = ("aitbc-dark", "aitbc-light", "aitbc-ansi")
_THEME_KEYS = {
    "name", "dark", "ansi", "primary", "secondary", "accent", "success", "warning", "error",
    "foreground", "background", "surface", "panel", "boost", "luminosity_spread",
    "text_alpha", "variables",
}


class ThemeFileError(ValueError):
    """A theme file that does not parse or names an unknown key."""


def theme_folder() -> Traversable:
    """Where the theme files are: the installed package data, else the source folder."""
    try:
        root = importlib.resources.files("tui.themes")
        if any(entry.name.endswith(".toml") for entry in root.iterdir()):
            return root
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parent.parent / "themes"


def parse_theme(text: str, source: str = "<theme>") -> Theme:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"{source}: {exc}") from exc
    unknown = set(data) - _THEME_KEYS
    if unknown:
        raise ThemeFileError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    if "name" not in data or "primary" not in data:
        raise ThemeFileError(f"{source}: a theme needs at least 'name' and 'primary'")
    variables = data.pop("variables", {})
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{source}: [variables] must be a table")
    return Theme(**data, variables={str(k): str(v) for k, v in variables.items()})


def load_themes(folder: Traversable | None = None) -> dict[str, Theme]:
    """Every ``*.toml`` theme in ``folder``; a broken file is logged and skipped."""
    root = folder if folder is not None else theme_folder()
    themes: dict[str, Theme] = {}
    try:
        entries: Iterable[Traversable] = sorted(root.iterdir(), key=lambda e: e.name)
    except OSError as exc:  # not packaged: the console runs on Textual's own themes
        log.warning("no console theme files at %s: %s", root, exc)
        return themes
    for entry in entries:
        if not entry.name.endswith(".toml"):
            continue
        try:
            theme = parse_theme(entry.read_text(encoding="utf-8"), entry.name)
        except (ThemeFileError, TypeError, ValueError) as exc:
            log.warning("skipping theme file %s: %s", entry.name, exc)
            continue
        themes[theme.name] = theme
    return themes


def default_prefs_path() -> Path:
    import platformdirs

    return platformdirs.user_state_path("aitbc-miner", appauthor=False) / "console.json"


class ThemeMemory:
    """The theme the operator last chose in the console, in a small JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> str | None:
        if self.path is None:
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring console preferences %s: %s", self.path, exc)
            return None
        theme = data.get("theme") if isinstance(data, dict) else None
        return theme if isinstance(theme, str) and theme else None

    def save(self, theme: str) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data: dict[str, object] = {}
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    data = loaded
            except (OSError, ValueError):
                pass
            data["theme"] = theme
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only home must not break the console
            log.warning("could not remember the theme in %s: %s", self.path, exc)


def few_colours(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the terminal has fewer than 256 colours, decided as Rich and Textual do:
    ``TEXTUAL_COLOR_SYSTEM`` if set, else ``COLORTERM=truecolor|24bit`` or a ``TERM``
    ending in ``256color``, ``kitty`` or ``direct`` means enough colours."""
    env = os.environ if environ is None else environ
    forced = env.get("TEXTUAL_COLOR_SYSTEM", "auto").strip().lower()
    if forced in ("truecolor", "256"):
        return False
    if forced == "standard":
        return True
    if env.get("COLORTERM", "").strip().lower() in ("truecolor", "24bit"):
        return False
    term = env.get("TERM", "").strip().lower()
    return term.rpartition("-")[2] not in ("256color", "kitty", "direct")


def automatic_theme(environ: Mapping[str, str] | None = None) -> str:
    """The theme when the operator chose none: the 16-colour one where that is all."""
    return ANSI_THEME if few_colours(environ) else DEFAULT_THEME


def next_theme(current: str, available: Iterable[str]) -> str:
    names = [n for n in CYCLE if n in set(available)]
    if not names:
        return current
    if current not in names:
        return names[0]
    return names[(names.index(current) + 1) % len(names)]
