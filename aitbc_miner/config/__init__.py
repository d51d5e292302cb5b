"""The miner's settings: one frozen, validated object from file, environment and flags.

Precedence, highest first: command-line flags (``overrides``), environment variables
``AITBC_MINER_<SECTION>__<KEY>`` (``AITBC_MINER_SLOTS__CPU=4``), the YAML file, defaults.
Unknown keys are errors in every layer. Every failure is a :class:`ConfigError` whose
message is one line naming the key path and where the value came from; the CLI maps it
to ``ExitCode.CONFIG``. The miner key is a ``SecretStr``: it never appears in ``repr``,
dumps, error messages or :func:`render_effective`.

``model`` holds the schema (every key), ``load`` the layering and the error messages.
"""

from .load import load_settings, render_effective
from .model import (
    APP_NAME,
    CONFIG_ENV_VAR,
    ENV_PREFIX,
    NON_SETTINGS_ENV_VARS,
    ConfigError,
    ConsoleSettings,
    CoordinatorSettings,
    GpuSettings,
    InferenceSettings,
    JobSettings,
    LogSettings,
    MinerSettings,
    PathSettings,
    PollSettings,
    Settings,
    SlotSettings,
    WorkspaceSettings,
    default_config_path,
    env_var_name,
)

__all__ = [
    "APP_NAME", "CONFIG_ENV_VAR", "ENV_PREFIX", "NON_SETTINGS_ENV_VARS", "ConfigError",
    "ConsoleSettings", "CoordinatorSettings", "GpuSettings", "InferenceSettings", "JobSettings",
    "LogSettings", "MinerSettings", "PathSettings", "PollSettings", "Settings", "SlotSettings",
    "WorkspaceSettings", "default_config_path", "env_var_name", "load_settings",
    "render_effective",
]
