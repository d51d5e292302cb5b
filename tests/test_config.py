"""Settings: precedence, validation messages, secrets, the example file and the reference table.

Run ``python -m tests.test_config`` to print the reference table for README.md.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, SecretStr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package may not be installed in the venv
    sys.path.insert(0, str(ROOT))

from aitbc_miner import config, logs  # noqa: E402
from aitbc_miner.config import (  # noqa: E402
    ConfigError,
    Settings,
    env_var_name,
    load_settings,
    render_effective,
)

EXAMPLE = ROOT / "config.example.yaml"
REFERENCE = ROOT / "README.md"
PUBLIC_KEY = "bxP7o0y1Tq9wq0V2vVn9VYlW5QLx0jYyX1tQ8oG6Qkw"  # 32 bytes, unpadded


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Platform dirs point into tmp_path and no AITBC_MINER_* variable leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    for kind in ("CONFIG", "STATE", "DATA"):
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path / "xdg" / kind.lower()))
    return tmp_path


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    message = str(info.value)
    assert message.startswith("config error: ")
    assert "\n" not in message and "Traceback" not in message
    assert info.value.__cause__ is None  # raised "from None" or with no chained error
    assert info.value.__context__ is None or info.value.__suppress_context__
    return message


# --- precedence: flag > env > file > default -----------------------------------------


def test_defaults_apply_when_nothing_is_set(tmp_path: Path) -> None:
    settings = load_settings(None, env={})
    assert settings.slots.cpu == 2 and settings.slots.gpu is None
    assert settings.coordinator.url == "http://127.0.0.1:18000"
    assert settings.miner.id == socket.gethostname()
    assert settings.paths.journal_path == tmp_path / "xdg/state/aitbc-miner/journal.sqlite3"
    assert settings.paths.jobs_dir == tmp_path / "xdg/data/aitbc-miner/jobs"


def test_file_beats_default(tmp_path: Path) -> None:
    path = write(tmp_path, "slots:\n  cpu: 5\n")
    assert load_settings(path, env={}).slots.cpu == 5


def test_env_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, "slots:\n  cpu: 5\n")
    assert load_settings(path, env={"AITBC_MINER_SLOTS__CPU": "6"}).slots.cpu == 6


def test_flag_beats_env(tmp_path: Path) -> None:
    path = write(tmp_path, "slots:\n  cpu: 5\n")
    settings = load_settings(path, {"slots": {"cpu": 7}}, env={"AITBC_MINER_SLOTS__CPU": "6"})
    assert settings.slots.cpu == 7


def test_layers_merge_per_key_and_none_flags_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, f"coordinator:\n  public_key: {PUBLIC_KEY}\n  read_timeout_s: 20\n")
    settings = load_settings(
        path,
        {"coordinator": {"url": "https://c.example", "read_timeout_s": None}, "slots": None},
        env={"AITBC_MINER_COORDINATOR__CONNECT_TIMEOUT_S": "1.5"},
    )
    assert settings.coordinator.url == "https://c.example"
    assert settings.coordinator.public_key == PUBLIC_KEY
    assert settings.coordinator.read_timeout_s == 20
    assert settings.coordinator.connect_timeout_s == 1.5


def test_env_overrides_nested_keys_of_every_kind() -> None:
    env = {
        "AITBC_MINER_COORDINATOR__URL": "https://coord.example/v1",
        "aitbc_miner_log__level": "debug",
        "AITBC_MINER_HEARTBEAT_INTERVAL_S": "30",
        "AITBC_MINER_MINER__PRICE": "0.5",
        "AITBC_MINER_PATHS__STATE_DIR": "/srv/miner",
        "AITBC_MINER_JOBS": '{"drain_grace_s": 10}',
    }
    settings = load_settings(None, env=env)
    assert settings.coordinator.api_base == "https://coord.example/v1"
    assert settings.log.level == "DEBUG"
    assert settings.heartbeat_interval_s == 30
    assert settings.miner.price == 0.5
    assert settings.paths.journal_path == Path("/srv/miner/journal.sqlite3")
    assert settings.jobs.drain_grace_s == 10


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITBC_MINER_SLOTS__GPU", "3")
    assert load_settings(None).slots.gpu == 3


# --- which file ------------------------------------------------------------------------


def test_config_file_from_env_var_and_flag_wins(tmp_path: Path) -> None:
    by_env = write(tmp_path, "slots:\n  cpu: 3\n", "env.yaml")
    by_flag = write(tmp_path, "slots:\n  cpu: 4\n", "flag.yaml")
    env = {"AITBC_MINER_CONFIG": str(by_env)}
    assert load_settings(None, env=env).slots.cpu == 3
    assert load_settings(by_flag, env=env).slots.cpu == 4


def test_default_config_path_is_used_only_when_it_exists() -> None:
    default = config.default_config_path()
    assert load_settings(None, env={}).slots.cpu == 2
    default.parent.mkdir(parents=True)
    default.write_text("slots:\n  cpu: 9\n", encoding="utf-8")
    assert load_settings(None, env={}).slots.cpu == 9


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(missing) in error_of(missing, env={})
    message = error_of(None, env={"AITBC_MINER_CONFIG": str(missing)})
    assert "AITBC_MINER_CONFIG" in message and str(missing) in message


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing\n"), env={}).slots.cpu == 2


def test_section_with_every_key_commented_out_is_empty(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "miner:\n  # id: x\npaths:\n"), env={}).slots.cpu == 2


# --- validation errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("coordinater:\n  url: x\n", ["unknown key 'coordinater' at top level", "'coordinator'"]),
        ("slots:\n  cpus: 1\n", ["unknown key 'cpus' in slots"]),
        ("slots:\n  cpu: many\n", ["slots.cpu: Input should be a valid integer", "(got 'many')"]),
        ("slots:\n  cpu: -1\n", ["slots.cpu: Input should be greater than or equal to 0 (got -1)"]),
        ("slots:\n  cpu: 0\n  gpu: 0\n", ["slots: at least one slot"]),
        ("slots:\n  cpu: yes\n", ["slots.cpu: expected a number, not a boolean"]),
        ("poll:\n  min_interval_s: 6\n", ["poll: min_interval_s (6.0) must not exceed max"]),
        ("poll:\n  min_interval_s: 0\n", ["poll.min_interval_s: Input should be greater than 0"]),
        ("jobs:\n  default_timeout_s: 4000\n", ["jobs: default_timeout_s (4000.0) must not"]),
        ("heartbeat_interval_s: 0.5\n", ["heartbeat_interval_s: Input should be greater than or"]),
        ("coordinator:\n  url: ftp://c.example\n", ["coordinator.url: must start with http"]),
        ("coordinator:\n  url: http://\n", ["coordinator.url: has no host"]),
        ("coordinator:\n  url: http://h:99x\n", ["coordinator.url: has an invalid port"]),
        ("coordinator:\n  url: http://h/?a=1\n", ["coordinator.url: must not contain"]),
        ("coordinator:\n  public_key: abc\n", ["coordinator.public_key: must be URL-safe base64"]),
        ("coordinator:\n  read_timeout_s: .nan\n", ["read_timeout_s: Input should be a finite"]),
        ("miner:\n  price: -1\n", ["miner.price: Input should be greater than or equal to 0"]),
        ("miner:\n  id: ''\n", ["miner.id: must not be empty"]),
        ("miner:\n  id: " + "x" * 129 + "\n", ["miner.id: must be at most 128 printable"]),
        ("miner:\n  key: a\n  key_file: /k\n",
         ["miner: set one of key, key_file or key_source, not key and key_file"]),
        ("log:\n  level: TRACE\n", ["log.level: Input should be 'DEBUG', 'INFO'"]),
        ("slots: 4\n", ["slots: Input should be a valid dictionary"]),
        ("- a\n- b\n", ["the top level must be a mapping, not a list"]),
        ("slots:\n  cpu: 1\n  cpu: 2\n", ["line 3: duplicate key 'cpu'"]),
        ("slots:\n  cpu: 1\n\n  gpu 2: x: y\n", ["line 4: mapping values are not allowed here"]),
        ("coordinator:\n  url: 'http://x\n", ["while scanning a quoted scalar started on line 2"]),
    ],
)
def test_invalid_file_values_are_one_line_errors_naming_key_and_file(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    message = error_of(path, env={})
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"AITBC_MINER_SLOTS__CPU": "-3"},
            "slots.cpu: Input should be greater than or equal to 0 (got '-3')"
            " [from AITBC_MINER_SLOTS__CPU]",
        ),
        (
            {"AITBC_MINER_SLOTS__CPUX": "1"},
            "unknown key 'cpux' in slots (did you mean 'cpu'?) [from AITBC_MINER_SLOTS__CPUX]",
        ),
        (
            {"AITBC_MINER_COORDINATER__URL": "x"},
            "unknown key 'coordinater' at top level (did you mean 'coordinator'?)"
            " [from AITBC_MINER_COORDINATER__URL]",
        ),
        (
            {"AITBC_MINER_COORDINATOR__URL": "c.example"},
            "coordinator.url: must start with http:// or https:// (got 'c.example')"
            " [from AITBC_MINER_COORDINATOR__URL]",
        ),
        (
            {"AITBC_MINER_SLOTS": "{bad"},
            "slots: value is not valid JSON [from AITBC_MINER_SLOTS]",
        ),
        (
            {"AITBC_MINER_PATHS__STATE_DIR": ""},
            "paths.state_dir: must not be empty (got '') [from AITBC_MINER_PATHS__STATE_DIR]",
        ),
    ],
)
def test_invalid_env_values_name_the_variable(env: dict[str, str], expected: str) -> None:
    assert error_of(None, env=env) == f"config error: {expected}"


def test_cross_field_error_names_every_layer_involved(tmp_path: Path) -> None:
    path = write(tmp_path, "poll:\n  min_interval_s: 2\n")
    message = error_of(path, env={"AITBC_MINER_POLL__MAX_INTERVAL_S": "1"})
    assert f"[from AITBC_MINER_POLL__MAX_INTERVAL_S, {path}]" in message


def test_invalid_flag_value_names_the_command_line() -> None:
    message = error_of(None, {"coordinator": {"url": "gopher://x"}}, env={})
    assert message.endswith("[from command line]")


def test_all_errors_are_reported_on_one_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "slots:\n  cpu: -1\nlog:\n  level: loud\n"), env={})
    assert "slots.cpu:" in message and "; log.level:" in message


def test_settings_are_frozen() -> None:
    settings = load_settings(None, env={})
    with pytest.raises(ValueError, match="frozen"):
        settings.slots.cpu = 8  # type: ignore[misc]


# --- coordinator URL and key -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://c.example:8443" + tail for tail in ("", "/", "/v1", "/v1/")],
)
def test_url_with_or_without_v1(url: str) -> None:
    coordinator = load_settings(None, {"coordinator": {"url": url}}, env={}).coordinator
    assert coordinator.root == "https://c.example:8443"
    assert coordinator.api_base == "https://c.example:8443/v1"


def test_public_key_is_stored_unpadded_like_receipt_key_ids() -> None:
    settings = load_settings(None, env={"AITBC_MINER_COORDINATOR__PUBLIC_KEY": PUBLIC_KEY + "="})
    assert settings.coordinator.public_key == PUBLIC_KEY
    assert error_of(None, env={"AITBC_MINER_COORDINATOR__PUBLIC_KEY": PUBLIC_KEY[:-4]})


# --- the miner key ---------------------------------------------------------------------


SECRET = "mk_live_Zq81-very-secret-value"


def test_key_from_env_is_resolved_and_registered_for_redaction() -> None:
    settings = load_settings(None, env={"AITBC_MINER_MINER__KEY": f"  {SECRET}\n"})
    assert settings.miner_key() == SECRET
    assert logs.redact(f"Bearer {SECRET}") == "Bearer ***"


def test_no_key_is_none() -> None:
    assert load_settings(None, env={}).miner_key() is None


def test_key_never_appears_in_repr_dump_render_or_errors(tmp_path: Path) -> None:
    env = {"AITBC_MINER_MINER__KEY": SECRET}
    settings = load_settings(None, env=env)
    for text in (repr(settings), str(settings), str(settings.model_dump()),
                 settings.model_dump_json(), render_effective(settings)):
        assert SECRET not in text
    assert isinstance(settings.model_dump()["miner"]["key"], SecretStr)
    # Errors elsewhere, a key of the wrong shape, or a key put under a wrong name.
    bad = write(tmp_path, f"miner:\n  kee: {SECRET}\nslots:\n  cpu: -1\n")
    for message in (
        error_of(bad, env=env),
        error_of(write(tmp_path, f"miner:\n  key: [{SECRET}]\n", "list.yaml"), env={}),
        error_of(None, env={**env, "AITBC_MINER_MINER__KEY_FILE": "/k"}),
        error_of(None, env={"AITBC_MINER_COORDINATOR__URL": f"ftp://m:{SECRET}@c.example"}),
    ):
        assert SECRET not in message


def test_key_file_is_read_and_stripped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = tmp_path / "miner.key"
    key_file.write_text(f"{SECRET}\n", encoding="utf-8")
    key_file.chmod(0o600)
    settings = load_settings(None, env={"AITBC_MINER_MINER__KEY_FILE": str(key_file)})
    with caplog.at_level(logging.WARNING):
        assert settings.miner_key() == SECRET
    assert caplog.records == []


@pytest.mark.parametrize(("mode", "who"), [(0o644, "everyone"), (0o640, "its group")])
def test_readable_key_file_warns_once_without_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, who: str
) -> None:
    key_file = tmp_path / f"miner-{mode:o}.key"
    key_file.write_text(SECRET, encoding="utf-8")
    key_file.chmod(mode)
    settings = load_settings(None, {"miner": {"key_file": str(key_file)}}, env={})
    with caplog.at_level(logging.WARNING, logger="aitbc_miner.config.model"):
        assert settings.miner_key() == SECRET
        assert settings.miner_key() == SECRET
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert who in warnings[0].getMessage() and "chmod 600" in warnings[0].getMessage()
    assert SECRET not in caplog.text


def test_unreadable_or_empty_key_file_is_a_config_error(tmp_path: Path) -> None:
    missing = load_settings(None, {"miner": {"key_file": str(tmp_path / "none")}}, env={})
    with pytest.raises(ConfigError, match=r"^config error: miner.key_file: cannot read .*none"):
        missing.miner_key()
    empty = tmp_path / "empty.key"
    empty.write_text("\n", encoding="utf-8")
    empty.chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(None, {"miner": {"key_file": str(empty)}}, env={}).miner_key()


# --- render_effective ------------------------------------------------------------------


def test_render_effective_is_yaml_with_secrets_redacted_and_computed_paths(tmp_path: Path) -> None:
    path = write(tmp_path, "slots:\n  gpu: 1\n")
    env = {"AITBC_MINER_MINER__KEY": SECRET}
    settings = load_settings(path, {"log": {"level": "DEBUG"}}, env=env)
    text = render_effective(settings)
    assert "key: '***'" in text and SECRET not in text
    assert f"# config file: {path}" in text
    assert "AITBC_MINER_MINER__KEY" in text and "log.level" in text
    data = yaml.safe_load(text)
    assert data["slots"] == {"cpu": 2, "gpu": 1, "per_gpu": 1}
    assert data["paths"]["state_dir"] == str(settings.paths.effective_state_dir)
    assert data["computed"] == {
        "coordinator_api_base": "http://127.0.0.1:18000/v1",
        "journal_path": str(settings.paths.journal_path),
        "jobs_dir": str(settings.paths.jobs_dir),
    }


def test_render_effective_shows_key_file_path(tmp_path: Path) -> None:
    settings = load_settings(None, {"miner": {"key_file": str(tmp_path / "k")}}, env={})
    data = yaml.safe_load(render_effective(settings))
    assert data["miner"]["key"] is None and data["miner"]["key_file"] == str(tmp_path / "k")


# --- the example file and the reference table -----------------------------------------


Leaf = tuple[tuple[str, ...], Any]


def leaf_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[Leaf]:
    rows = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            rows += leaf_fields(info.annotation, (*prefix, name))
        else:
            rows.append(((*prefix, name), info))
    return rows


def dotted(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:  # an empty mapping is a leaf (e.g. secrets: {})
            keys |= dotted(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def test_every_field_has_a_description() -> None:
    def walk(model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} lacks a description"
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                walk(info.annotation)

    walk(Settings)


def test_example_file_loads_with_the_default_values() -> None:
    assert load_settings(EXAMPLE, env={}).model_dump() == load_settings(None, env={}).model_dump()


def test_example_file_documents_every_key() -> None:
    # Disabled keys are written "# key: value"; uncomment them and the file must name all.
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    uncommented = [
        line.replace("# ", "", 1) if line.lstrip().startswith("# ") and ":" in line
        and line.lstrip()[2:].split(":")[0].isidentifier() else line
        for line in lines
    ]
    documented = dotted(yaml.safe_load("\n".join(uncommented)))
    expected = {".".join(path) for path, _ in leaf_fields(Settings)}
    assert documented == expected


_DEFAULT_DOCS = {
    "miner.id": "host name",
    "paths.state_dir": "per-user state dir",
    "paths.data_dir": "per-user data dir",
    "runners.allowlist_dirs": "`/etc/aitbc-miner/allowlist.d`, then the per-user one",
}
_TYPE_NAMES = {
    str: "string", int: "integer", float: "number", Path: "path", SecretStr: "secret string",
    bool: "boolean", Decimal: "decimal number",
}


def type_name(annotation: Any) -> str:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if get_origin(annotation) is list:
        return f"list of {type_name(args[0])}"
    if get_origin(annotation) is dict:
        return f"mapping of {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    if args and len(args) < len(get_args(annotation)):  # X | None
        return type_name(args[0]) + ", optional"
    if args:  # Annotated[X, ...]
        return type_name(args[0])
    return _TYPE_NAMES[annotation]


def _shown_default(info: Any) -> Any:
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list) and value and isinstance(value[0], Path):
        return [str(p) for p in value]
    return value


def reference_table() -> str:
    lines = [
        "| key | type | default | environment variable | description |",
        "|---|---|---|---|---|",
    ]
    for path, info in leaf_fields(Settings):
        key = ".".join(path)
        default = _DEFAULT_DOCS.get(key) or (
            "unset" if info.default is None and info.default_factory is None
            else f"`{_shown_default(info)}`"
        )
        lines.append(
            f"| `{key}` | {type_name(info.annotation)} | {default} | `{env_var_name(*path)}` "
            f"| {info.description} |"
        )
    return "\n".join(lines) + "\n"


def test_reference_table_in_docs_has_a_row_for_every_key() -> None:
    assert reference_table() in REFERENCE.read_text(encoding="utf-8"), (
        "README.md is out of date; print the table with "
        "`.venv/bin/python -m tests.test_config`"
    )


if __name__ == "__main__":
    print(reference_table(), end="")
