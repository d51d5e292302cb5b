"""The operator's allowlist of commands, and the check every ``cli`` job must pass.

Entries live in YAML files under ``allowlist.d/`` directories (``commands: {name: entry}``).
A job names an entry; nothing the job sends is ever an executable, a shell string or a
search path. Its arguments, environment variables and stdin are checked against the
entry's rules, and a refusal names the rule (``args.charset``, ``env.loader``, ...) so
the client can see why. The checks assume the worst: the job's author is hostile.

Why the executable checks: an entry that names a symlink, or a file (or folder) others
may write, lets someone other than the operator decide what runs. Such entries are
disabled at load time and checked again before every run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..codes import ErrorCode
from ..sandbox.limits import Limits, NetworkPolicy
from .base import JobFailed

log = logging.getLogger(__name__)

ENTRY_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SAFE_STRING = re.compile(r"[A-Za-z0-9._,:=+@%^-]*")  # no shell metacharacters, no '/'
SAFE_PATH = re.compile(r"[A-Za-z0-9._,:=+@%^/-]*")
SAFE_VALUE = re.compile(r"[A-Za-z0-9._,:=+@%^/ -]*")
# Read by the dynamic loader, libc or an interpreter at start-up: never from a job.
LOADER_PREFIXES = ("LD_", "DYLD_", "GCONV", "MALLOC_", "GLIBC_", "PYTHON", "PERL", "RUBY",
                   "NODE_", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "BASH_FUNC_", "LUA_")
LOADER_NAMES = frozenset({"LOCPATH", "NLSPATH", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN",
                          "TZDIR", "GETCONF_DIR", "BASH_ENV", "ENV", "IFS", "SHELLOPTS",
                          "BASHOPTS", "PS4", "CDPATH", "GLOBIGNORE", "OPENSSL_CONF",
                          "SSL_CERT_FILE", "SSL_CERT_DIR"})
# Set by the miner for every job; a job or entry may not replace them.
RESERVED_NAMES = frozenset({"PATH", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES",
                            "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"})
MAX_STDIN_BYTES = 64 << 20  # no entry may take more stdin than this


def env_name_problem(name: str) -> str | None:
    """The rule a variable name breaks for every job, whatever the entry says."""
    upper = name.upper()
    if upper in LOADER_NAMES or upper.startswith(LOADER_PREFIXES):
        return f"env.loader: {name} is read by the loader or an interpreter and is never passed"
    if upper in RESERVED_NAMES or upper.startswith("AITBC_"):
        return f"env.reserved: {name} is set by the miner itself"
    if not ENV_NAME.fullmatch(name):
        return f"env.name: {name[:64]!r} is not a valid variable name"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgRule(_Model):
    """How one job-supplied argument must look."""

    type: Literal["string", "path", "int", "float", "enum"] = "string"
    pattern: str | None = None  # a full match is required; replaces the default charset
    choices: list[str] = Field(default_factory=list)
    max_length: int = Field(256, ge=1, le=65536)
    min: float | None = None
    max: float | None = None
    allow_absolute: bool = False  # path: may it start with '/'
    allow_dash: bool = False  # may it start with '-' (an option the command would parse)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


class ArgsPolicy(_Model):
    min_count: int = Field(0, ge=0)
    max_count: int = Field(0, ge=0, le=1024)
    max_total_length: int = Field(16384, ge=1)
    rules: list[ArgRule] = Field(default_factory=list)  # by position
    rest: ArgRule | None = None  # positions past ``rules``; None: the rule list is all


class EnvRule(_Model):
    pattern: str | None = None
    max_length: int = Field(1024, ge=1, le=65536)


class AllowEntry(_Model):
    """One command the operator allows, and everything a job may vary about it."""

    executable: Path
    fixed_args: list[str] = Field(default_factory=list)
    args: ArgsPolicy = Field(default_factory=ArgsPolicy)
    env: dict[str, EnvRule | None] = Field(default_factory=dict)  # names a job may set
    set_env: dict[str, str] = Field(default_factory=dict)
    stdin_max_bytes: int = Field(0, ge=0, le=MAX_STDIN_BYTES)
    limits: Limits = Field(default_factory=Limits)  # only the fields named here override
    network: NetworkPolicy = NetworkPolicy.NONE
    gpu: bool = False
    secrets: list[str] = Field(default_factory=list)
    output: Literal["text", "json"] = "text"
    # What else the command reads (its script, its data), bound read-only into the sandbox.
    read_only: list[Path] = Field(default_factory=list)

    @field_validator("env", "set_env")
    @classmethod
    def _safe_names(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        for name in value:
            if problem := env_name_problem(name):
                raise ValueError(problem)
        return value


def executable_problem(path: Path) -> str | None:
    """Why ``path`` must not be run as an allowlisted executable, or None."""
    text = str(path)
    if not path.is_absolute() or os.path.normpath(text) != text:
        return f"executable.absolute: {text} is not an absolute, normalised path"
    try:
        info = path.lstat()
    except OSError as exc:
        return f"executable.missing: {text}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode) or os.path.realpath(text) != text:
        return (f"executable.symlink: {text} is or passes through a symlink (to "
                f"{os.path.realpath(text)}); name the real file")
    if not stat.S_ISREG(info.st_mode) or not os.access(text, os.X_OK):
        return f"executable.type: {text} is not an executable regular file"
    for item in [path, *path.parents]:
        try:
            mode, owner = item.stat().st_mode, item.stat().st_uid
        except OSError as exc:
            return f"executable.missing: {item}: {exc.strerror}"
        if owner not in (0, os.geteuid()):
            return f"executable.owner: {item} belongs to uid {owner}, not root or the miner"
        # A sticky shared folder (/tmp) is safe to pass through: the next item in the
        # chain is ours (checked above) and nobody else may rename or replace it.
        shared = mode & (stat.S_IWGRP | stat.S_IWOTH) and not (item != path and mode & stat.S_ISVTX)
        if shared:
            return (f"executable.writable: {item} is writable by its group or others (mode "
                    f"{mode & 0o7777:o}); only root or the miner's user may change it")
    return None


def open_executable(path: Path) -> int:
    """Open the allowlisted file once; the sandbox runs this descriptor, never the path again.

    The checks are made on what was opened (``fstat``), so a file swapped in after
    ``executable_problem`` passed cannot run. Raises ``JobFailed`` E_DENY naming the rule.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        _deny(f"executable.missing: {path}: {exc.strerror}")
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
        problem = f"executable.type: {path} is not an executable regular file"
    elif info.st_uid not in (0, os.geteuid()):
        problem = f"executable.owner: {path} belongs to uid {info.st_uid}, not root or the miner"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = (f"executable.writable: {path} is writable by its group or others (mode "
                   f"{info.st_mode & 0o7777:o})")
    if problem is not None:
        os.close(fd)
        _deny(problem)
    if not os.pread(fd, 4, 0).startswith((b"\x7fELF", b"#!")):  # else execvp runs it with sh
        os.close(fd)
        raise JobFailed(ErrorCode.E_INTERNAL, f"sandbox: could not start the executable: "
                        f"{path} is neither an ELF program nor a #! script")
    return fd


@dataclass(frozen=True, slots=True)
class Invocation:
    """A job that passed the allowlist: exactly what will run."""

    name: str
    entry: AllowEntry
    argv: list[str]
    env: dict[str, str]
    stdin: bytes | None


@dataclass(slots=True)
class Allowlist:
    entries: dict[str, AllowEntry] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)  # name -> why
    problems: list[str] = field(default_factory=list)  # files that were not read

    @classmethod
    def load(cls, dirs: Sequence[Path], *, secrets: Collection[str] = ()) -> Allowlist:
        """Read every ``*.yaml``/``*.yml`` in ``dirs``; a later directory overrides a name.

        Never raises for bad input: a file that cannot be trusted or parsed is skipped and
        an entry that cannot run is disabled, each with its reason logged.
        """
        found = cls()
        for directory in dirs:
            if not directory.is_dir():
                continue
            if problem := _trust_problem(directory):
                found._problem(problem)
                continue
            for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
                found._read(path, secrets)
        return found

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        log.error("allowlist: %s", text)

    def _read(self, path: Path, secrets: Collection[str]) -> None:
        if problem := _trust_problem(path):
            self._problem(problem)
            return
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            self._problem(f"{path}: skipped: {_one_line(exc)}")
            return
        commands = data.get("commands") if isinstance(data, dict) else None
        if not isinstance(commands, dict) or set(data) != {"commands"}:
            self._problem(f"{path}: skipped: the file must hold one mapping, 'commands'")
            return
        for name, raw in commands.items():
            name = str(name)
            if name in self.entries or name in self.disabled:
                log.info("allowlist: %s redefines command %r", path, name)
                self.entries.pop(name, None)
                self.disabled.pop(name, None)
            try:
                entry = AllowEntry.model_validate(raw)
            except ValidationError as exc:
                self._disable(path, name, f"invalid entry: {_one_line(exc)}")
                continue
            if reason := _entry_problem(name, entry, secrets):
                self._disable(path, name, reason)
            else:
                self.entries[name] = entry

    def _disable(self, path: Path, name: str, reason: str) -> None:
        self.disabled[name] = reason
        log.error("allowlist: %s: command %r disabled: %s", path, name, reason)

    def resolve(self, payload: Mapping[str, Any]) -> Invocation:
        """The invocation for a ``cli`` payload; ``JobFailed`` E_BADJOB or E_DENY otherwise."""
        command, args, env, stdin = _shape(payload)
        if command in self.disabled:
            _deny(f"command.disabled: entry {command!r} is disabled ({self.disabled[command]})")
        entry = self.entries.get(command)
        if entry is None:
            _deny(f"command.unknown: no allowlist entry named {command[:64]!r}")
        if problem := executable_problem(entry.executable):
            _deny(problem)
        check_args(entry.args, args)
        job_env = check_env(entry, env)
        data = None if stdin is None else stdin.encode("utf-8")
        if data is not None and len(data) > entry.stdin_max_bytes:
            _deny(f"stdin.size: {len(data)} bytes of stdin, entry {command!r} takes at most "
                  f"{entry.stdin_max_bytes}")
        argv = [str(entry.executable), *entry.fixed_args, *args]
        return Invocation(command, entry, argv, {**entry.set_env, **job_env}, data)


def _trust_problem(path: Path) -> str | None:
    try:
        info = path.stat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if info.st_uid not in (0, os.geteuid()):
        return (f"allowlist.owner: {path}: ignored: owned by uid {info.st_uid}, not root or "
                "the miner")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"allowlist.writable: {path}: ignored: writable by its group or others (mode "
                f"{info.st_mode & 0o7777:o})")
    return None


def _entry_problem(name: str, entry: AllowEntry, secrets: Collection[str]) -> str | None:
    if not ENTRY_NAME.fullmatch(name):
        return f"command.name: {name!r} must match {ENTRY_NAME.pattern}"
    missing = [s for s in entry.secrets if s not in secrets]
    if missing:
        return f"secrets: {', '.join(missing)} not configured"
    for path in entry.read_only:
        if not path.is_absolute() or not path.exists():
            return f"read_only: {path} is not an absolute path that exists"
    return executable_problem(entry.executable)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: "
                         f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
    else:
        text = str(exc)
    return " ".join(text.split())[:400]


def _deny(message: str) -> NoReturn:
    raise JobFailed(ErrorCode.E_DENY, message)


def _bad(message: str) -> NoReturn:
    raise JobFailed(ErrorCode.E_BADJOB, message)


def _shape(payload: Mapping[str, Any]) -> tuple[str, list[str], dict[str, str], str | None]:
    command = payload.get("command")
    if not isinstance(command, str) or not command:
        _bad("'command' must be a non-empty string naming an allowlist entry")
    args = payload.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        _bad("'args' must be a list of strings")
    env = payload.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        _bad("'env' must be a mapping of names to strings")
    stdin = payload.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        _bad("'stdin' must be a string")
    return command, args, env, stdin


def check_args(policy: ArgsPolicy, args: list[str]) -> None:
    """Refuse (E_DENY, naming the rule) any job argument list the policy does not allow."""
    if not policy.min_count <= len(args) <= policy.max_count:
        _deny(f"args.count: takes {policy.min_count} to {policy.max_count} job arguments, "
              f"got {len(args)}")
    total = sum(len(a) for a in args)
    if total > policy.max_total_length:
        _deny(f"args.length: {total} characters of arguments, over {policy.max_total_length}")
    for index, value in enumerate(args):
        rule = policy.rules[index] if index < len(policy.rules) else policy.rest
        if rule is None:
            _deny(f"args.count: no rule allows an argument at position {index}")
        check_arg(rule, index, value)


def check_arg(rule: ArgRule, index: int, value: str) -> None:
    where = f"args[{index}]"
    if len(value) > rule.max_length:
        _deny(f"args.length: {where} is {len(value)} characters, over {rule.max_length}")
    if CONTROL.search(value):
        _deny(f"args.control: {where} contains a control character")
    if rule.type in ("int", "float"):
        _check_number(rule, where, value)
    elif rule.type == "enum":
        if value not in rule.choices:
            _deny(f"args.choices: {where} {value[:64]!r} is not one of {rule.choices}")
    else:
        _check_text(rule, where, value)


def _check_text(rule: ArgRule, where: str, value: str) -> None:
    if value.startswith("-") and not rule.allow_dash:
        _deny(f"args.option: {where} starts with '-' and would be read as an option")
    safe = SAFE_PATH if rule.type == "path" else SAFE_STRING
    if rule.pattern is not None:
        if not re.fullmatch(rule.pattern, value):
            _deny(f"args.pattern: {where} {value[:64]!r} does not match {rule.pattern!r}")
    elif not safe.fullmatch(value):
        bad = "".join(sorted({c for c in value if not safe.fullmatch(c)}))
        _deny(f"args.charset: {where} contains {bad!r}, outside the safe characters")
    parts = value.split("/")
    if rule.type == "path" and value.startswith("/") and not rule.allow_absolute:
        _deny(f"args.absolute: {where} is an absolute path")
    if ".." in parts:
        _deny(f"args.dotdot: {where} has a '..' component")


def _check_number(rule: ArgRule, where: str, value: str) -> None:
    try:
        if rule.type == "int" and not re.fullmatch(r"-?[0-9]{1,18}", value):
            raise ValueError
        number = float(value)
    except ValueError:
        kind = "an int" if rule.type == "int" else "a number"
        _deny(f"args.type: {where} {value[:64]!r} is not {kind}")
    if not math.isfinite(number):
        _deny(f"args.type: {where} is not finite")
    if (rule.min is not None and number < rule.min) or (rule.max is not None and number > rule.max):
        _deny(f"args.range: {where} {value} is outside [{rule.min}, {rule.max}]")


def check_env(entry: AllowEntry, env: Mapping[str, str]) -> dict[str, str]:
    """The job's variables, each allowed by name and value; refuse (E_DENY) otherwise."""
    for name, value in env.items():
        if problem := env_name_problem(name):
            _deny(problem)
        if name not in entry.env:
            _deny(f"env.name: {name} is not among the variables this entry accepts")
        rule = entry.env[name] or EnvRule()
        if len(value) > rule.max_length:
            _deny(f"env.length: {name} is {len(value)} characters, over {rule.max_length}")
        if CONTROL.search(value):
            _deny(f"env.value: {name} contains a control character")
        pattern = re.compile(rule.pattern) if rule.pattern is not None else SAFE_VALUE
        if not pattern.fullmatch(value):
            _deny(f"env.value: {name} does not match {pattern.pattern!r}")
    return dict(env)
