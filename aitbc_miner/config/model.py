"""The miner's settings as pydantic models: every key, its default, type and meaning.

Loading (file, environment, flags, error messages) lives in ``config.load``; this module
is only the schema, so a newcomer reads every key in one place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import socket
import stat
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    SettingsConfigDict,
)

from .. import logs
from ..handoff import HANDOFF_FD_VAR
from ..protocol import API_PREFIX
from ..runners.settings import RunnerSettings
from ..secretsource import SecretError, SecretSource, credential_path

APP_NAME = "aitbc-miner"
ENV_PREFIX = "AITBC_MINER_"
ENV_DELIMITER = "__"
#: Names the config file; a ``--config`` flag wins over it.
CONFIG_ENV_VAR = "AITBC_MINER_CONFIG"
#: ``AITBC_MINER_*`` variables that are not settings; any other unknown one is an error.
NON_SETTINGS_ENV_VARS = frozenset({CONFIG_ENV_VAR, HANDOFF_FD_VAR})
#: The systemd credential holding the miner key when neither key nor key_file is set.
KEY_CREDENTIAL = "miner-key"
#: Key paths whose values are never echoed in errors or renders.
SECRET_PATHS = frozenset({("miner", "key"), ("inference", "api_key"), ("fleet", "redis_url")})
_MAX_SHOWN = 60  # characters of an offending value quoted in an error

log = logging.getLogger(__name__)
_warned_key_files: set[Path] = set()


class ConfigError(Exception):
    """Raised for any invalid configuration input; ``str()`` is one line for the operator."""


def default_config_path() -> Path:
    """The per-user config file, used only when it exists and no other file is named."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "config.yaml"


def env_var_name(*path: str) -> str:
    """The variable that sets a key: ``("slots", "cpu")`` -> ``AITBC_MINER_SLOTS__CPU``."""
    return ENV_PREFIX + ENV_DELIMITER.join(path).upper()


# --- field types ------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    # YAML 1.1 reads `yes`/`on` as true; pydantic would quietly turn that into 1.
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def _clean_path(value: Path | None) -> Path | None:
    if value is not None and str(value) in ("", "."):
        raise ValueError("must not be empty")
    return None if value is None else value.expanduser().absolute()


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
OptPath = Annotated[Path | None, AfterValidator(_clean_path)]


def _doc(default: Any, description: str, **constraints: Any) -> Any:
    """A field with its one-line description (shown in the reference table)."""
    if callable(default):
        return Field(default_factory=default, description=description, **constraints)
    return Field(default, description=description, **constraints)


def _check_order(low_name: str, low: float, high_name: str, high: float) -> None:
    if low > high:
        raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high})")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CoordinatorSettings(_Section):
    url: str = _doc(
        "http://127.0.0.1:18000",
        "Coordinator base URL (http or https), with or without the trailing /v1",
    )
    connect_timeout_s: Float = _doc(
        3.0, "Seconds to wait for a connection to the coordinator", gt=0
    )
    read_timeout_s: Float = _doc(10.0, "Seconds to wait for its answer once connected", gt=0)
    public_key: str | None = _doc(
        None, "Pinned coordinator receipt key: URL-safe base64 of the raw 32-byte Ed25519 key"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ValueError("has an invalid port") from None
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not contain credentials, a query or a fragment")
        return parts.geturl().rstrip("/")

    @field_validator("public_key")
    @classmethod
    def _check_public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().rstrip("=")
        raw = b""
        if re.fullmatch(r"[A-Za-z0-9_-]+", text):
            with contextlib.suppress(binascii.Error, ValueError):
                raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if len(raw) != 32:
            raise ValueError("must be URL-safe base64 of exactly 32 bytes")
        return text  # unpadded: the form receipts carry in key_id

    @property
    def root(self) -> str:
        """The URL without the API prefix, e.g. ``http://127.0.0.1:18000``."""
        return self.url.removesuffix(API_PREFIX)

    @property
    def api_base(self) -> str:
        """The URL endpoint paths are appended to; always ends with ``/v1``."""
        return self.root + API_PREFIX


class MinerSettings(_Section):
    id: str = _doc(
        socket.gethostname, "Miner identity shown to the coordinator (at most 128 characters)"
    )
    key: SecretStr | None = _doc(
        None, "Miner API key itself (or AITBC_MINER_MINER__KEY, taken out of the process "
        "environment at start); key_source keeps it off the disk"
    )
    key_file: OptPath = _doc(None, "File holding the miner API key; keep it mode 0600")
    key_source: SecretSource | None = _doc(
        None, "Where the key is read at start: {credential: NAME}, {file: PATH} (tmpfs, "
        "0600) or {token_object: LABEL} (docs/secrets.md)")
    region: str | None = _doc(None, "Region label sent at registration")
    price: Float | None = _doc(
        None, "Asking price in AITBC per unit, sent as the `price` capability", ge=0
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if len(value) > 128 or not value.isprintable():
            raise ValueError("must be at most 128 printable characters")
        return value

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return None if value is None else SecretStr(value.get_secret_value().strip())

    @model_validator(mode="after")
    def _one_key_source(self) -> MinerSettings:
        given = [n for n in ("key", "key_file", "key_source") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"set one of key, key_file or key_source, not {' and '.join(given)}")
        if self.key_source is not None and self.key_source.value is not None:
            raise ValueError("key_source: an inline key is miner.key, not key_source.value")
        return self


class PollSettings(_Section):
    min_interval_s: Float = _doc(0.25, "Seconds between polls while work keeps coming", gt=0)
    max_interval_s: Float = _doc(1.0, "Longest pause between polls when there is no work", gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PollSettings:
        _check_order("min_interval_s", self.min_interval_s, "max_interval_s", self.max_interval_s)
        return self


class SlotSettings(_Section):
    cpu: Int = _doc(2, "Number of CPU job slots", ge=0)
    gpu: Int | None = _doc(
        None, "GPU job slots; unset = per_gpu on every GPU found, 0 = no GPU work", ge=0)
    per_gpu: Int = _doc(1, "Job slots per GPU (or MIG instance) when gpu is unset", ge=1, le=16)

    @model_validator(mode="after")
    def _some_slot(self) -> SlotSettings:
        if self.gpu is not None and self.cpu + self.gpu < 1:
            raise ValueError("at least one slot is needed (cpu + gpu >= 1)")
        return self


class GpuSettings(_Section):
    sample_interval_s: Float = _doc(1.0, "Seconds between GPU telemetry samples", gt=0, le=60)
    process_every: Int = _doc(2, "Read per-process VRAM every Nth sample", ge=1, le=60)
    history: Int = _doc(120, "5-second buckets of history kept per GPU for the console's "
                        "graphs (bucket means; 120 = 10 minutes)", ge=1, le=3600)
    simulate: Int = _doc(0, "Fake GPUs for the demo, shown as SIMULATED (0 = real NVML)",
                         ge=0, le=64)
    simulate_lost_file: OptPath = _doc(
        None, "Simulated GPUs only: while this file exists, the GPUs whose indexes it lists "
        "(one per line; none listed: all) fall off the bus (demos and tests of GPU loss)")


class JobSettings(_Section):
    default_timeout_s: Float = _doc(
        600.0, "Wall-clock limit in seconds of a job that names none", gt=0
    )
    max_timeout_s: Float = _doc(3600.0, "Upper bound in seconds on any job's limit", gt=0)
    drain_grace_s: Float = _doc(
        300.0, "On SIGTERM, seconds running jobs may finish before they are canceled", ge=0
    )

    @model_validator(mode="after")
    def _ordered(self) -> JobSettings:
        _check_order(
            "default_timeout_s", self.default_timeout_s, "max_timeout_s", self.max_timeout_s
        )
        return self


class WorkspaceSettings(_Section):
    retention_jobs: Int = _doc(200, "Keep the newest N finished job folders", ge=0)
    retention_days: Float = _doc(7.0, "Delete finished job folders older than this many days", ge=0)
    min_free_mb: Float = _doc(
        512.0, "Claim no job while the data disk has fewer free MB than this (0 = no floor)",
        ge=0)


class PathSettings(_Section):
    state_dir: OptPath = _doc(None, "Directory holding the journal (journal.sqlite3)")
    data_dir: OptPath = _doc(None, "Directory holding job workspaces (jobs/)")

    @property
    def effective_state_dir(self) -> Path:
        return self.state_dir or platformdirs.user_state_path(APP_NAME, appauthor=False)

    @property
    def effective_data_dir(self) -> Path:
        return self.data_dir or platformdirs.user_data_path(APP_NAME, appauthor=False)

    @property
    def journal_path(self) -> Path:
        return self.effective_state_dir / "journal.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.effective_data_dir / "jobs"


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _doc(
        "INFO", "Lowest level logged (DEBUG adds tracebacks)"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class InferenceSettings(_Section):
    backend: Literal["ollama", "openai", "off"] = _doc(
        "ollama", "LLM backend for inference/generate/chat jobs (off = refuse them)")
    url: str | None = _doc(
        None, "Backend URL (default http://127.0.0.1:11434 for ollama, :8000 for openai)")
    allow_pull: bool = _doc(False, "Pull a missing Ollama model instead of failing the job")
    default_model: str = _doc(
        "llama3.2:latest", "Model of an inference job that names none (upstream default)",
        min_length=1)
    max_tokens: Int | None = _doc(
        None, "Largest max_tokens a job may ask for (more is E_BADJOB, never cut short)", ge=1)
    refresh_interval_s: Float = _doc(30.0, "Seconds between model-list refreshes", gt=0)
    keep_alive: str | None = _doc(None, "Ollama keep_alive for loaded models (e.g. '5m')")
    prompt_endpoint: Literal["chat", "completions"] = _doc(
        "chat", "OpenAI backend: endpoint for prompt jobs")
    api_key: SecretStr | None = _doc(None, "OpenAI backend: bearer key, if the server wants one")


class MetricsSettings(_Section):
    listen: str | None = _doc(
        None, "host:port for Prometheus metrics at /metrics (unset = off; no auth: keep it "
        "on loopback or a private network)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free one
            raise ValueError(f"must be host:port, got {value!r}")
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ConsoleSettings(_Section):
    theme: str = _doc("aitbc-dark", "Console colour theme", min_length=1)
    bell: bool = _doc(False, "Ring the terminal bell with each alert toast (OFFLINE, AUTH "
                      "REFUSED, GPU LOST, GPU HOT, failures rising)")


Price = Annotated[Decimal, BeforeValidator(_no_bool)]


class EarningsSettings(_Section):
    power_price_per_kwh: Price | None = _doc(
        None, "Electricity price per kWh, in `currency` (unset = no profitability figures)",
        ge=0)
    currency: str = _doc("EUR", "Currency of the electricity price and the AITBC rate",
                         min_length=1, max_length=8)
    aitbc_rate: Price | None = _doc(
        None, "Value of 1 AITBC in `currency` (unset = energy cost only, no net earnings)",
        ge=0)


class TokenSettings(_Section):
    module: OptPath = _doc(
        None, "PKCS#11 module of the token holding the rig key, e.g. "
        "/usr/lib/softhsm/libsofthsm2.so (unset = a key file, see identity.key_file)")
    token_label: str | None = _doc(None, "Label of that token (needed with module)")
    key_label: str = _doc("aitbc-rig", "Label of the rig's Ed25519 key pair in the token",
                          min_length=1)
    pin_file: OptPath = _doc(None, "File holding the token's user PIN (mode 0600)")
    pin_env: str | None = _doc(
        None, "Environment variable holding the PIN, removed once read (neither set: the "
        "systemd credential token-pin)")

    @model_validator(mode="after")
    def _complete(self) -> TokenSettings:
        if self.module is not None and not self.token_label:
            raise ValueError("token_label is needed with module")
        if self.pin_file is not None and self.pin_env is not None:
            raise ValueError("set pin_file or pin_env, not both")
        return self


class IdentitySettings(_Section):
    key_file: OptPath = _doc(
        None, "The rig's Ed25519 key file when no token is set; made on first run, mode 0600 "
        "(unset = identity.key in the state dir)")
    token: TokenSettings = _doc(TokenSettings, "PKCS#11 token holding the rig key")

    @model_validator(mode="before")
    @classmethod
    def _empty_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data and data["token"] is None:
            return {**data, "token": {}}  # every key commented out
        return data


def _group_id(name: str | None) -> int | None:
    """The gid of a group given by name or number (``None`` stays ``None``)."""
    import grp

    if name is None or name.isdigit():
        return None if name is None else int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no group named {name!r} on this host") from None


class ControlSettings(_Section):
    socket_dir: OptPath = _doc(
        None, "Folder of control.sock and control.ro.sock (unset = the private state dir); "
        "needed with a group, never inside data_dir")
    operator_group: str | None = _doc(
        None, "Group whose members may send commands (the miner's user and root always may)")
    viewer_group: str | None = _doc(
        None, "Group whose members may watch through control.ro.sock, never command")
    max_connections: Int = _doc(
        64, "Open connections per socket, streams included; more are refused", ge=1, le=4096)

    @field_validator("operator_group", "viewer_group")
    @classmethod
    def _known_group(cls, value: str | None) -> str | None:
        _group_id(value)
        return value

    @model_validator(mode="after")
    def _shared_folder(self) -> ControlSettings:
        if (self.operator_group or self.viewer_group) and self.socket_dir is None:
            raise ValueError("a group needs socket_dir: the state dir stays owner-only")
        return self

    @property
    def operator_gid(self) -> int | None:
        return _group_id(self.operator_group)

    @property
    def viewer_gid(self) -> int | None:
        return _group_id(self.viewer_group)


class FleetSettings(_Section):
    redis_url: SecretStr | None = _doc(
        None, "Redis URL (redis://user:password@host:6379/0, rediss:// for TLS; unset = no "
        "fleet). With sentinel set, only its user, password, db and TLS are used")
    sentinel: list[str] = _doc(
        [], "Sentinel addresses host:port; the master is found through them (redis-py)")
    sentinel_service: str = _doc("mymaster", "The master's name at the sentinels",
                                 min_length=1)
    name: str = _doc("default", "Fleet name: the rigs that share work", min_length=1,
                     max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    rig_id: str | None = _doc(
        None, "This rig's name in the fleet (unset = miner.id)", min_length=1, max_length=128,
        pattern=r"^[A-Za-z0-9_.@-]+$")
    lease_s: Float = _doc(
        15.0, "Seconds a rig's lease lasts; renewed three times per lease. A rig silent for "
        "two leases is taken for gone and its outcomes and jobs go to other rigs", ge=2,
        le=3600)
    history: Int = _doc(
        10_000, "Metrics samples kept per rig in Redis (a trimmed stream)", ge=10, le=1_000_000)

    @field_validator("sentinel")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"must be host:port, got {item!r}")
        return value


_SECTIONS = frozenset(
    {"coordinator", "miner", "poll", "slots", "gpu", "inference", "runners", "jobs",
     "workspace", "paths", "log", "metrics", "console", "control", "identity", "fleet",
     "earnings"}
)


class Settings(BaseSettings):
    """Everything the miner reads at start; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False,
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER, case_sensitive=False,
    )

    coordinator: CoordinatorSettings = _doc(CoordinatorSettings, "The coordinator")
    miner: MinerSettings = _doc(MinerSettings, "This miner's identity, credential and offer")
    heartbeat_interval_s: Float = _doc(15.0, "Seconds between heartbeats to the coordinator", ge=1)
    poll: PollSettings = _doc(PollSettings, "How often to ask for work")
    slots: SlotSettings = _doc(SlotSettings, "How many jobs run at once, per kind")
    gpu: GpuSettings = _doc(GpuSettings, "GPU telemetry (NVML) and simulated GPUs")
    inference: InferenceSettings = _doc(InferenceSettings, "LLM inference backend")
    runners: RunnerSettings = _doc(
        RunnerSettings, "Process runners: allowlist, limits, python functions, artifacts, secrets")
    jobs: JobSettings = _doc(JobSettings, "Job time limits and shutdown grace")
    workspace: WorkspaceSettings = _doc(WorkspaceSettings, "Retention of job folders")
    paths: PathSettings = _doc(PathSettings, "Where state and job data live")
    log: LogSettings = _doc(LogSettings, "Logging")
    metrics: MetricsSettings = _doc(MetricsSettings, "Prometheus metrics endpoint")
    console: ConsoleSettings = _doc(ConsoleSettings, "Operator console")
    earnings: EarningsSettings = _doc(
        EarningsSettings, "Profitability: electricity price and the AITBC exchange rate")
    control: ControlSettings = _doc(
        ControlSettings, "Control sockets: who may watch and steer the running miner")
    identity: IdentitySettings = _doc(
        IdentitySettings, "The rig's signing identity: a PKCS#11 token or a key file")
    fleet: FleetSettings = _doc(
        FleetSettings, "A fleet of rigs on Redis: shared retries, outcomes that survive a "
        "dead rig, metrics history (docs/fleet.md); off unless redis_url is set")

    # Where the values came from, for render_effective (not settings themselves).
    _origin: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A section whose keys are all commented out parses as null; read it as empty.
        if isinstance(data, dict):
            return {k: ({} if v is None and k in _SECTIONS else v) for k, v in data.items()}
        return data

    def miner_key(self) -> str | None:
        """The miner key from the one source set of ``miner.key``, ``miner.key_file`` and
        ``miner.key_source``, else (under systemd) the credential ``miner-key`` the unit
        loads; registered for log redaction. Blocking (a token may be asked).

        Raises:
            ConfigError: the source is missing, unreadable, empty or exposed (one line; a
                ``key_source`` failure carries its ``secretsource.SecretCode``).
        """
        if self.miner.key is not None:
            value = self.miner.key.get_secret_value()
        elif self.miner.key_file is not None:
            value = _read_key_file(self.miner.key_file)
        elif self.miner.key_source is not None:
            try:
                value = self.miner.key_source.read_text(token=self.identity.token,
                                                        in_memory=True)
            except SecretError as exc:
                raise ConfigError(f"config error: miner.key_source: {exc}") from None
        elif (credential := credential_path(KEY_CREDENTIAL)) is not None:
            value = _read_key_file(credential)
        else:
            return None
        logs.add_secret(value)
        return value


def _read_key_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"config error: miner.key_file: cannot read {path}: {reason}") from None
    if not text:
        raise ConfigError(f"config error: miner.key_file: {path} is empty")
    if mode & 0o077 and path not in _warned_key_files:
        _warned_key_files.add(path)
        who = "everyone" if mode & 0o007 else "its group"
        log.warning(
            "miner key file %s is readable by %s (mode %04o); run: chmod 600 %s",
            path, who, stat.S_IMODE(mode), path,
            extra={"path": str(path), "mode": f"{stat.S_IMODE(mode):04o}"},
        )
    return text


