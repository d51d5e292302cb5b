"""The allowlist: what loads, and every way a hostile job tries to get around it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aitbc_miner.codes import ErrorCode
from aitbc_miner.runners.allowlist import Allowlist, executable_problem
from aitbc_miner.runners.base import JobFailed

from .helpers import BEHAVE, PY, behave, write_allowlist

WORDS = {"max_count": 3, "rest": {"type": "string", "max_length": 32}}
FILES = {"max_count": 2, "rest": {"type": "path"}}


def _load(folder: Path, commands: dict, **kw) -> Allowlist:
    return Allowlist.load([write_allowlist(folder, commands)], **kw)


def _refusal(allowlist: Allowlist, payload: dict) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        allowlist.resolve({"type": "cli", **payload})
    return caught.value


@pytest.fixture
def allowlist(tmp_path: Path) -> Allowlist:
    return _load(tmp_path / "a", {
        "words": behave("echo", args=WORDS),
        "files": behave("echo", args=FILES),
        "abs": behave("echo", args={"max_count": 1, "rules": [{"type": "path",
                                                                "allow_absolute": True}]}),
        "typed": behave("echo", args={"max_count": 2, "rules": [
            {"type": "int", "min": 1, "max": 10}, {"type": "enum", "choices": ["fast", "slow"]}]}),
        "env": behave("echo", env={"QUALITY": {"pattern": "[0-9]{1,3}"}, "LABEL": None}),
        "stdin": behave("echo", stdin_max_bytes=10),
    })


def test_an_allowed_job_becomes_an_exact_argv(allowlist):
    # Given an entry taking words
    # When a job asks for it with valid words, a variable and stdin where allowed
    call = allowlist.resolve({"type": "cli", "command": "words", "args": ["a.b", "x-1", "k=v"]})
    env_call = allowlist.resolve({"type": "cli", "command": "env", "env": {"QUALITY": "90"}})
    # Then the argv is the executable, the fixed arguments, then the job's
    assert call.argv == [PY, "-I", BEHAVE, "echo", "a.b", "x-1", "k=v"]
    assert env_call.env == {"QUALITY": "90"}
    assert allowlist.resolve({"type": "cli", "command": "stdin", "stdin": "hi"}).stdin == b"hi"


@pytest.mark.parametrize("arg", ["a;b", "$(id)", "`id`", "a|b", "a&b", ">x", "a b", "*", "~",
                                 "a'b", 'a"b', "{a,b}", "a\\b", "!1", "a/b"])
def test_shell_metacharacters_are_refused(allowlist, arg):
    # Given an entry taking plain words / When a job sends a shell metacharacter
    refusal = _refusal(allowlist, {"command": "words", "args": [arg]})
    # Then it is refused, naming the rule
    assert refusal.code is ErrorCode.E_DENY
    assert refusal.message.startswith("args.charset: args[0] contains ")


@pytest.mark.parametrize(("command", "arg", "rule"), [
    ("files", "../etc/passwd", "args.dotdot"),
    ("files", "a/../../b", "args.dotdot"),
    ("words", "..", "args.dotdot"),
    ("files", "/etc/passwd", "args.absolute"),
    ("abs", "/tmp/../etc/shadow", "args.dotdot"),
    ("words", "-rf", "args.option"),
    ("files", "--output=x", "args.option"),
    ("words", "a\nb", "args.control"),
    ("words", "a\x00b", "args.control"),
    ("words", "x" * 33, "args.length"),
])
def test_paths_options_and_sizes_outside_the_rules_are_refused(allowlist, command, arg, rule):
    # Given entries with path and word rules / When a job sends an argument breaking one
    refusal = _refusal(allowlist, {"command": command, "args": [arg]})
    # Then the refusal names that rule
    assert refusal.code is ErrorCode.E_DENY
    assert refusal.message.startswith(f"{rule}: args[0]")


@pytest.mark.parametrize(("args", "rule"), [
    (["a", "b", "c", "d"], "args.count"),
    (["0", "fast"], "args.range"),
    (["1e3", "fast"], "args.type"),
    (["5", "medium"], "args.choices"),
])
def test_counts_types_and_choices_are_enforced(allowlist, args, rule):
    command = "words" if rule == "args.count" else "typed"
    refusal = _refusal(allowlist, {"command": command, "args": args})
    assert refusal.code is ErrorCode.E_DENY and refusal.message.startswith(rule)


def test_a_relative_path_and_a_number_in_range_pass(allowlist):
    assert allowlist.resolve({"command": "files", "args": ["in/a.txt"]}).argv[-1] == "in/a.txt"
    typed = allowlist.resolve({"command": "typed", "args": ["10", "slow"]})
    assert typed.argv[-2:] == ["10", "slow"]


@pytest.mark.parametrize(("name", "rule"), [
    ("LD_PRELOAD", "env.loader"), ("LD_LIBRARY_PATH", "env.loader"), ("ld_audit", "env.loader"),
    ("PYTHONPATH", "env.loader"), ("GCONV_PATH", "env.loader"), ("BASH_ENV", "env.loader"),
    ("DYLD_INSERT_LIBRARIES", "env.loader"), ("MALLOC_CHECK_", "env.loader"),
    ("PATH", "env.reserved"), ("HOME", "env.reserved"), ("CUDA_VISIBLE_DEVICES", "env.reserved"),
    ("AITBC_SECRETS_DIR", "env.reserved"), ("OTHER", "env.name"), ("A-B", "env.name"),
])
def test_loader_reserved_and_unlisted_variables_are_refused(allowlist, name, rule):
    # Given an entry accepting QUALITY and LABEL / When a job sends another variable
    refusal = _refusal(allowlist, {"command": "env", "env": {name: "/tmp/evil.so"}})
    # Then it is refused, and loader variables are named as such
    assert refusal.code is ErrorCode.E_DENY and refusal.message.startswith(rule)


def test_variable_values_must_match_their_rule(allowlist):
    refusal = _refusal(allowlist, {"command": "env", "env": {"QUALITY": "9; rm -rf /"}})
    assert refusal.message.startswith("env.value: QUALITY does not match")
    refusal = _refusal(allowlist, {"command": "env", "env": {"LABEL": "$(id)"}})
    assert refusal.message.startswith("env.value: LABEL")


@pytest.mark.parametrize("command", ["rm", "/bin/sh", "../words", "words ", "sh -c id"])
def test_unknown_entries_and_path_tricks_in_the_command_are_refused(allowlist, command):
    refusal = _refusal(allowlist, {"command": command})
    assert refusal.code is ErrorCode.E_DENY
    assert refusal.message.startswith("command.unknown: no allowlist entry named")


def test_stdin_is_refused_where_not_allowed_or_too_large(allowlist):
    assert _refusal(allowlist, {"command": "words", "stdin": "x"}).message.startswith("stdin.size")
    assert _refusal(allowlist, {"command": "stdin", "stdin": "x" * 11}).message.startswith(
        "stdin.size: 11 bytes")


@pytest.mark.parametrize("payload", [{}, {"command": 3}, {"command": "words", "args": "a b"},
                                     {"command": "words", "args": [1]},
                                     {"command": "env", "env": {"QUALITY": 3}},
                                     {"command": "stdin", "stdin": ["x"]}])
def test_malformed_payloads_are_e_badjob(allowlist, payload):
    assert _refusal(allowlist, payload).code is ErrorCode.E_BADJOB


def test_symlinked_executables_are_disabled(tmp_path):
    # Given an entry naming a symlink to python, and one naming a path through a symlinked folder
    link = tmp_path / "bin" / "python"
    link.parent.mkdir()
    link.symlink_to(PY)
    folder_link = tmp_path / "pybin"
    folder_link.symlink_to(os.path.dirname(PY))
    allowlist = _load(tmp_path / "a", {"link": {"executable": str(link)},
                                      "via": {"executable": str(folder_link / Path(PY).name)}})
    # When jobs name them
    # Then both are refused as disabled, naming the symlink rule
    for name in ("link", "via"):
        refusal = _refusal(allowlist, {"command": name})
        assert refusal.code is ErrorCode.E_DENY
        assert refusal.message.startswith(f"command.disabled: entry {name!r} is disabled "
                                          "(executable.symlink:")


def test_writable_executables_and_folders_are_disabled(tmp_path):
    # Given a world-writable program, and a program in a world-writable (not sticky) folder
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    program = loose / "prog"
    program.write_bytes(Path("/usr/bin/true").read_bytes())
    program.chmod(0o777)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    inside = shared / "prog"
    inside.write_bytes(b"#!/bin/sh\n")
    inside.chmod(0o755)
    # When checked
    # Then both are refused, each naming what is writable
    suffix = ("is writable by its group or others (mode {}); only root or the miner's user "
              "may change it")
    assert executable_problem(program) == \
        f"executable.writable: {program} {suffix.format(777)}"
    assert executable_problem(inside) == f"executable.writable: {shared} {suffix.format(777)}"
    # And so is a program in a folder only its group may write (the swap of issue 8)
    shared.chmod(0o775)
    assert executable_problem(inside) == f"executable.writable: {shared} {suffix.format(775)}"
    # And a program replaced by a writable one after loading is refused at run time
    safe = loose / "safe"
    safe.write_bytes(b"#!/bin/sh\n")
    safe.chmod(0o755)
    allowlist = _load(tmp_path / "a", {"safe": {"executable": str(safe)}})
    safe.chmod(0o757)
    assert _refusal(allowlist, {"command": "safe"}).message.startswith("executable.writable:")


def test_relative_missing_and_non_files_are_refused(tmp_path):
    assert executable_problem(Path("bin/python")).startswith("executable.absolute:")
    assert executable_problem(Path("/usr/bin/../bin/true")).startswith("executable.absolute:")
    assert executable_problem(tmp_path / "nope").startswith("executable.missing:")
    assert executable_problem(tmp_path).startswith("executable.type:")
    assert executable_problem(Path(PY)) is None


def test_entries_that_would_pass_loader_variables_are_disabled_at_load(tmp_path):
    # Given an entry that sets LD_PRELOAD itself, and one accepting PATH from jobs
    allowlist = _load(tmp_path / "a", {"preload": behave("echo", set_env={"LD_PRELOAD": "x.so"}),
                                      "path": behave("echo", env={"PATH": None}),
                                      "ok": behave("echo")})
    # Then both are disabled with the rule, the other entry still loads
    assert "env.loader: LD_PRELOAD" in allowlist.disabled["preload"]
    assert "env.reserved: PATH" in allowlist.disabled["path"]
    assert list(allowlist.entries) == ["ok"]


def test_untrusted_or_broken_files_are_skipped_and_later_folders_override(tmp_path):
    # Given a system folder, a user folder redefining one entry, and a world-writable file
    system = write_allowlist(tmp_path / "system", {"a": behave("echo"), "b": behave("echo")})
    user = write_allowlist(tmp_path / "user", {"b": behave("lines")})
    (user / "broken.yaml").write_text("commands: [not, a, mapping]\n")
    loose = user / "zz-loose.yaml"
    loose.write_text("commands: {c: {executable: /usr/bin/true}}\n")
    loose.chmod(0o666)
    # When loaded in order
    allowlist = Allowlist.load([system, user, tmp_path / "missing"])
    # Then the user's "b" wins, and the loose and broken files were skipped with reasons
    assert sorted(allowlist.entries) == ["a", "b"]
    assert allowlist.entries["b"].fixed_args[-1] == "lines"
    assert any("broken.yaml: skipped" in p for p in allowlist.problems)
    assert any(p.startswith("allowlist.writable:") and "zz-loose.yaml: ignored: writable by "
               "its group or others (mode 666)" in p for p in allowlist.problems)


def test_entries_needing_unconfigured_secrets_are_disabled(tmp_path):
    allowlist = _load(tmp_path / "a", {"s": behave("echo", secrets=["token"])}, secrets=["other"])
    assert allowlist.disabled["s"] == "secrets: token not configured"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) & 0o002 == 0
