"""Every place the agent starts a process names that process's whole environment.

A spawn without ``env=`` inherits the agent's environment: whatever an operator put there
(a key, a PIN, a token) would reach the child. This reads the agent's sources (the
reference coordinator under ``devnet/`` is not the agent) and fails on any call that
starts a process without an explicit environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "aitbc_miner"
#: Calls that start a program, and the keyword (or position) that carries its environment.
SPAWNS = {"create_subprocess_exec": "env", "create_subprocess_shell": "env", "run": "env",
          "Popen": "env", "call": "env", "check_call": "env", "check_output": "env",
          "execve": 2, "execvpe": 2, "spawnve": 3, "posix_spawn": 2, "posix_spawnp": 2}
#: Calls that start a program with the agent's own environment: never allowed.
INHERITING = {"system", "popen", "execv", "execvp", "execl", "execlp", "spawnv", "spawnl",
              "fork_exec"}
SUBPROCESS_OWNERS = {"subprocess", "asyncio", "os"}


def _spawns(path: Path) -> list[tuple[int, str, bool]]:
    """(line, call, names its environment) for every process start in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        name = node.func.attr
        if owner_name not in SUBPROCESS_OWNERS:
            continue
        if name in INHERITING:
            found.append((node.lineno, f"{owner_name}.{name}", False))
        elif name in SPAWNS and not (name == "run" and owner_name == "asyncio"):
            where = SPAWNS[name]
            named = (any(k.arg == where for k in node.keywords) if isinstance(where, str)
                     else len(node.args) > where)
            found.append((node.lineno, f"{owner_name}.{name}", named))
    return found


def test_every_process_the_agent_starts_gets_an_explicit_environment() -> None:
    seen, bare = [], []
    for path in sorted(ROOT.rglob("*.py")):
        if "devnet" in path.relative_to(ROOT).parts:
            continue
        for line, call, named in _spawns(path):
            where = f"{path.relative_to(ROOT.parent)}:{line} {call}"
            seen.append(where)
            if not named:
                bare.append(where)
    # The known spawn sites are found (so this test would see a new one) ...
    assert any("sandbox/process.py" in s and "create_subprocess_exec" in s for s in seen), seen
    assert any("aitbc_miner/handoff.py" in s and "execve" in s for s in seen), seen
    # ... and none of them inherits the agent's environment
    assert bare == []


def test_the_scan_sees_a_spawn_without_env(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import subprocess, os\nsubprocess.run(['x'])\nos.system('x')\n"
                      "subprocess.run(['y'], env={})\n")
    assert _spawns(sample) == [(2, "subprocess.run", False), (3, "os.system", False),
                               (4, "subprocess.run", True)]
