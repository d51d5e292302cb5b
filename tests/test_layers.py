"""Import layering, checked on the source with ``ast`` (ruff's banned-api is global, these
rules are per directory).

- ``tui/`` is a view over the engine's public surface: from ``aitbc_miner`` it may import only
  the names in ``TUI_MAY_IMPORT``, and no I/O library at all.
- ``aitbc_miner/`` never imports the console (``tui``) or ``textual``; only ``aitbc_miner/gpu/``
  imports ``pynvml``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TUI_MAY_IMPORT = frozenset({
    "aitbc_miner",  # the package root (``__version__``)
    "aitbc_miner.engine",
    "aitbc_miner.engine.snapshot",
    "aitbc_miner.engine.bus",  # the event bus the test fake (tui/fake.py) reuses
    "aitbc_miner.codes",
    "aitbc_miner.fleet.view",  # the fleet console's rows and errors (tui/fleet.py)
})
TUI_BANNED = ("httpx", "aiosqlite", "sqlite3", "pynvml", "psutil", "redis")
ENGINE_BANNED = ("tui", "textual")
# The command line is the composition root: it starts the console, imported lazily when
# the console is asked for. Nothing else under aitbc_miner/ may reach tui.
ENGINE_MAY_IMPORT = {"aitbc_miner/host/cli.py": frozenset({"tui.app"}),
                     "aitbc_miner/host/fleetcmd.py": frozenset({"tui.fleet"})}


def _sources(top: str) -> list[Path]:
    files = sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)
    assert files, f"no Python files under {top}/"
    return files


def _package(path: Path) -> str:
    """The dotted package a file's relative imports resolve against."""
    return ".".join(path.relative_to(ROOT).parts[:-1])


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` is a module or package of this repository."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``, nested ones included, and for
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module of this
    repository, else as importing ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = _package(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            for alias in node.names:
                full = f"{module}.{alias.name}"
                yield node.lineno, full if _is_module(full) else module
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                   or isinstance(node.func, ast.Name) and node.func.id == "__import__")):
            yield node.lineno, node.args[0].value


def _within(module: str, names: tuple[str, ...] | frozenset[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{line}"


def test_tui_imports_only_the_engines_public_surface() -> None:
    bad = [f"{_where(path, line)} imports {module}"
           for path in _sources("tui") for line, module in imports(path)
           if _within(module, ("aitbc_miner",)) and module not in TUI_MAY_IMPORT]
    assert not bad, ("tui/ may import from aitbc_miner only "
                     f"{', '.join(sorted(TUI_MAY_IMPORT))}:\n" + "\n".join(bad))


def test_tui_imports_no_io_library() -> None:
    bad = [f"{_where(path, line)} imports {module}"
           for path in _sources("tui") for line, module in imports(path)
           if _within(module, TUI_BANNED)]
    assert not bad, f"tui/ must not import {', '.join(TUI_BANNED)}:\n" + "\n".join(bad)


def test_engine_never_imports_the_console() -> None:
    bad = []
    for path in _sources("aitbc_miner"):
        allowed = ENGINE_MAY_IMPORT.get(path.relative_to(ROOT).as_posix(), frozenset())
        bad += [f"{_where(path, line)} imports {module}" for line, module in imports(path)
                if _within(module, ENGINE_BANNED) and module not in allowed]
    assert not bad, "aitbc_miner/ must not import tui or textual:\n" + "\n".join(bad)


def test_only_the_gpu_package_imports_pynvml() -> None:
    gpu = ROOT / "aitbc_miner" / "gpu"
    bad = [f"{_where(path, line)} imports {module}"
           for path in _sources("aitbc_miner") if gpu not in path.parents
           for line, module in imports(path) if _within(module, ("pynvml",))]
    assert not bad, "only aitbc_miner/gpu/ may import pynvml:\n" + "\n".join(bad)


def test_the_sandbox_sits_below_the_runners() -> None:
    """``sandbox/`` runs processes; the runners turn them into jobs. Never the other way."""
    sandbox = ROOT / "aitbc_miner" / "sandbox"
    bad = [f"{_where(path, line)} imports {module}"
           for path in _sources("aitbc_miner/sandbox")
           for line, module in imports(path)
           if _within(module, ("aitbc_miner.runners", "aitbc_miner.engine"))]
    assert not bad, f"{sandbox.name}/ may not import the runners or the engine:\n" + "\n".join(
        bad)


def test_the_checker_sees_what_it_must() -> None:
    """The rules above are only as good as ``imports``: it resolves relative and nested
    imports and literal dynamic ones."""
    nvml = {m for _, m in imports(ROOT / "aitbc_miner" / "gpu" / "nvml.py")}
    assert "pynvml" in nvml  # importlib.import_module("pynvml")
    cli = {m for _, m in imports(ROOT / "aitbc_miner" / "host" / "cli.py")}
    assert "tui.app" in cli  # imported inside a function
    fake = {m for _, m in imports(ROOT / "tui" / "fake.py")}
    assert "aitbc_miner.engine.bus" in fake
