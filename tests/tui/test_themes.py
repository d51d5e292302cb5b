"""Theme files: they parse, they are found as package data (source checkout and wheel),
and the operator's choice is remembered in a small file."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tui.theming import (
    CYCLE,
    ThemeFileError,
    ThemeMemory,
    load_themes,
    next_theme,
    parse_theme,
    theme_folder,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"aitbc-dark", "aitbc-light", "aitbc-ansi"}


def test_the_shipped_themes_parse() -> None:
    themes = load_themes()
    assert SHIPPED <= set(themes)
    assert themes["aitbc-dark"].dark and not themes["aitbc-light"].dark
    assert themes["aitbc-ansi"].ansi  # 16-colour terminals: the terminal's own palette
    assert {p.stem for p in (ROOT / "themes").glob("*.toml")} == SHIPPED


def test_importlib_resources_finds_them_in_the_checkout() -> None:
    names = {entry.name for entry in importlib.resources.files("tui.themes").iterdir()}
    assert {f"{name}.toml" for name in SHIPPED} <= names
    assert {e.name for e in theme_folder().iterdir()} >= {f"{n}.toml" for n in SHIPPED}


def test_a_broken_theme_file_is_refused_with_its_name() -> None:
    with pytest.raises(ThemeFileError, match="bad.toml: unknown keys colour"):
        parse_theme('name = "x"\nprimary = "#fff"\ncolour = "red"\n', "bad.toml")
    with pytest.raises(ThemeFileError, match="needs at least"):
        parse_theme('dark = true\n', "empty.toml")


def test_a_broken_file_is_skipped_and_the_rest_load(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text('name = "good"\nprimary = "#123456"\n')
    (tmp_path / "bad.toml").write_text("name = \n")
    assert set(load_themes(tmp_path)) == {"good"}
    assert load_themes(tmp_path / "missing") == {}  # unpackaged: Textual's themes remain


def test_t_cycles_through_the_shipped_themes() -> None:
    names = list(CYCLE) + ["nord"]
    assert next_theme("aitbc-dark", names) == "aitbc-light"
    assert next_theme("aitbc-ansi", names) == "aitbc-dark"
    assert next_theme("nord", names) == "aitbc-dark"


def test_the_choice_is_remembered_and_a_bad_file_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state" / "console.json"
    memory = ThemeMemory(path)
    assert memory.load() is None
    memory.save("aitbc-light")
    assert ThemeMemory(path).load() == "aitbc-light"
    path.write_text("{not json")
    assert ThemeMemory(path).load() is None
    ThemeMemory(None).save("x")  # no file: nothing remembered, no error
    blocked = tmp_path / "file"
    blocked.write_text("")
    ThemeMemory(blocked / "console.json").save("x")  # unwritable: logged, not raised


def _package_data_configured() -> bool:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = data.get("tool", {}).get("setuptools", {}).get("package-data", {})
    return any(p.endswith(".toml") for p in package_data.get("tui.themes", ()))


@pytest.mark.slow
@pytest.mark.skipif(not _package_data_configured(),
                    reason="pyproject.toml does not list tui.themes package data yet "
                           "(the proposed [tool.setuptools.package-data] line)")
def test_a_built_wheel_carries_the_themes(tmp_path: Path) -> None:
    """A non-editable install: build the wheel, unpack it, import from there only."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("aitbc_miner-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert {f"tui/themes/{name}.toml" for name in SHIPPED} <= set(names)
    probe = ("import importlib.resources, tui, tui.theming as t; print(tui.__file__);"
             "print(sorted(e.name for e in importlib.resources.files('tui.themes').iterdir()"
             " if e.name.endswith('.toml')));"
             "print(sorted(t.load_themes()))")
    out = subprocess.run([sys.executable, "-I", "-c",
                          f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
                         cwd=tmp_path, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert out.splitlines()[0].startswith(str(site))  # not the checkout
    assert "aitbc-dark.toml" in out and "'aitbc-ansi', 'aitbc-dark', 'aitbc-light'" in out
