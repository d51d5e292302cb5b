"""Loading the settings: YAML file, ``AITBC_MINER_*`` environment, flags, in that order
of increasing precedence, and one-line errors that name the key and where it came from.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsError,
)

from .. import logs
from ..handoff import settings_environment
from .model import (
    _MAX_SHOWN,
    _SECTIONS,
    CONFIG_ENV_VAR,
    ENV_DELIMITER,
    ENV_PREFIX,
    NON_SETTINGS_ENV_VARS,
    SECRET_PATHS,
    ConfigError,
    Settings,
    default_config_path,
    env_var_name,
)

# --- loading ----------------------------------------------------------------------

# Each layer's raw data and its label, highest precedence first; None labels the environment.
_Layers = tuple[tuple[Mapping[str, Any], str | None], ...]


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env_map = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._env_map.items()}


class _DictSource(PydanticBaseSettingsSource):
    """Already-parsed data (the YAML file, the flags) as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"config error: cannot read {path}: {reason}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        problem = _one_line(str(exc.problem or "invalid YAML"))
        if exc.context and exc.context_mark:
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise ConfigError(f"config error: {path}{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: {path}: {_one_line(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"config error: {path}: the top level must be a mapping, not a {kind}")
    return data


def _resolve_config_path(config_path: Path | None, env: Mapping[str, str]) -> Path | None:
    if config_path is not None:
        chosen, named_by = Path(config_path).expanduser(), "--config"
    elif env.get(CONFIG_ENV_VAR):
        chosen, named_by = Path(env[CONFIG_ENV_VAR]).expanduser(), CONFIG_ENV_VAR
    else:
        default = default_config_path()
        return default if default.is_file() else None
    if not chosen.exists():
        raise ConfigError(f"config error: config file {chosen} ({named_by}) does not exist")
    return chosen


def _check_env_names(env: Mapping[str, str]) -> list[str]:
    used = []
    for name in env:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NON_SETTINGS_ENV_VARS:
            continue
        head = upper[len(ENV_PREFIX):].split(ENV_DELIMITER)[0].lower()
        if head not in Settings.model_fields:
            hint = _suggest(head, Settings.model_fields)
            where = f"at top level{hint} [from {name}]"
            raise ConfigError(f"config error: unknown key {head!r} {where}")
        used.append(name)
    return sorted(used)


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = _drop_none(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


def load_settings(
    config_path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Load, merge and validate the configuration.

    ``config_path`` is the ``--config`` flag (a missing file is an error); otherwise
    ``AITBC_MINER_CONFIG``, then :func:`default_config_path` if that file exists.
    ``overrides`` holds flag values as a nested dict; ``None`` values mean "flag not given".
    ``env`` defaults to the process's settings environment (``os.environ`` plus what was
    handed over across the start's re-exec, ``handoff``).

    Raises:
        ConfigError: any unreadable file, YAML error, unknown key or invalid value.
    """
    env = dict(settings_environment() if env is None else env)
    path = _resolve_config_path(config_path, env)
    file_data = _read_yaml(path) if path else {}
    flag_data = _drop_none(overrides or {})
    env_names = _check_env_names(env)
    sources = (
        _DictSource(Settings, flag_data),
        _MappingEnvSource(Settings, env),
        _DictSource(Settings, file_data),
    )
    layers: _Layers = ((flag_data, "command line"), (env, None), (file_data, str(path)))
    try:
        settings = Settings(_build_sources=(sources, {}))
    except ValidationError as exc:
        errors = exc.errors(include_input=True, include_url=False)
        message = "; ".join(_describe(err, layers) for err in errors)
        raise ConfigError(f"config error: {message}") from None
    except SettingsError as exc:  # a section set through one variable, not as valid JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else "settings"
        where = f" [from {env_var_name(name)}]" if found else ""
        raise ConfigError(f"config error: {name}: value is not valid JSON{where}") from None
    settings._origin = {"file": path, "env": env_names, "flags": sorted(_dotted_keys(flag_data))}
    return settings


# --- error messages ---------------------------------------------------------------


def _describe(err: Any, layers: _Layers) -> str:
    loc = tuple(str(part) for part in err["loc"])
    source = _source_of(loc, layers)
    suffix = f" [from {source}]" if source else ""
    if err["type"] == "extra_forbidden":
        parent = loc[:-1]
        where = "at top level" if not parent else f"in {'.'.join(parent)}"
        return f"unknown key {loc[-1]!r} {where}{_suggest(loc[-1], _fields_at(parent))}{suffix}"
    message = err["msg"].removeprefix("Value error, ")
    return f"{'.'.join(loc) or 'settings'}: {message}{_shown(loc, err.get('input'))}{suffix}"


def _shown(loc: tuple[str, ...], value: Any) -> str:
    """`` (got X)`` for a scalar input, never for a secret, with URL credentials masked."""
    if loc in SECRET_PATHS or loc[-1:] == ("value",) or not isinstance(value, str | int | float):
        return ""  # ("value",): a secret source's inline value (runners.secrets.X.value)
    if isinstance(value, bool):
        return f" (got {str(value).lower()})"
    if isinstance(value, str):
        text = repr(logs.redact(re.sub(r"//[^/@]*@", "//***@", value)))
    else:
        text = str(value)
    return f" (got {text[:_MAX_SHOWN]}{'...' if len(text) > _MAX_SHOWN else ''})"


def _source_of(loc: tuple[str, ...], layers: _Layers) -> str | None:
    """Name the layers that supplied ``loc`` (or anything under it), the winning one first."""
    found: list[str] = []
    for data, label in layers:
        if label is None:  # the environment: name the variables
            wanted = {env_var_name(*loc[:n]) for n in range(1, len(loc) + 1)}
            prefix = env_var_name(*loc) + ENV_DELIMITER
            found += sorted(n for n in data if n.upper() in wanted or n.upper().startswith(prefix))
        elif _has_path(data, loc):
            found.append(label)
        if found and not _is_section(loc):
            break
    return ", ".join(found) or None


def _has_path(data: Any, loc: tuple[str, ...]) -> bool:
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True


def _is_section(loc: tuple[str, ...]) -> bool:
    return len(loc) == 1 and loc[0] in _SECTIONS


def _fields_at(parent: tuple[str, ...]) -> Mapping[str, Any]:
    model: Any = Settings
    for part in parent:
        annotation = model.model_fields.get(part).annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return {}
        model = annotation
    fields: Mapping[str, Any] = model.model_fields
    return fields


def _suggest(word: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            keys += _dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


# --- rendering --------------------------------------------------------------------


def render_effective(settings: Settings) -> str:
    """YAML of the effective configuration (what ``aitbc-miner config check`` prints).

    Secrets show as ``'***'``; default paths are resolved; a ``computed`` block lists the
    API base, journal and job-workspace paths. Comment lines say where values came from.
    """
    data = settings.model_dump(mode="json")
    data["miner"]["key"] = "***" if settings.miner.key is not None else None
    data["paths"] = {
        "state_dir": str(settings.paths.effective_state_dir),
        "data_dir": str(settings.paths.effective_data_dir),
    }
    data["computed"] = {
        "coordinator_api_base": settings.coordinator.api_base,
        "journal_path": str(settings.paths.journal_path),
        "jobs_dir": str(settings.paths.jobs_dir),
    }
    origin = settings._origin
    header = [
        "# aitbc-miner effective configuration",
        f"# config file: {origin.get('file') or 'none (built-in defaults)'}",
        f"# environment: {', '.join(origin.get('env') or []) or 'none'}",
        f"# command line: {', '.join(origin.get('flags') or []) or 'none'}",
    ]
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body
