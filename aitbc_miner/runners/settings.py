"""Settings of the process runners (``cli`` and ``python``), ready to mount into ``Settings``.

Proposed place: the ``runners:`` section of the config file, e.g.::

    runners:
      allowlist_dirs: [/etc/aitbc-miner/allowlist.d, ~/.config/aitbc-miner/allowlist.d]
      limits: {memory_mb: 2048, processes: 256, nice: 10}
      kill: {sigint_grace_s: 7.5, sigterm_grace_s: 2.5}
      python:
        paths: [/opt/aitbc-jobs]
        functions: ["jobs.resize:run", {target: "jobs.fetch:run", network: host}]
      artifacts: {inline_max_bytes: 262144, upload_url: null}
      secrets:
        hf_token: {file: /etc/aitbc-miner/secrets/hf_token}
        db_password: {credential: db-password}    # $CREDENTIALS_DIRECTORY/db-password
        signing_seed: {token_object: job-seed}    # a data object in identity.token

Secret values are ``SecretStr`` (never in ``repr`` or dumps) and are read from their
source at each job (``secretsource``), so rotating one needs no restart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..sandbox.limits import Limits, NetworkPolicy
from ..secretsource import SecretSource, job_token

SYSTEM_ALLOWLIST_DIR = Path("/etc/aitbc-miner/allowlist.d")
PYTHON_TARGET = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")


def default_allowlist_dirs() -> list[Path]:
    """System first, then the user's: a user entry of the same name replaces the system one."""
    user = platformdirs.user_config_path("aitbc-miner", appauthor=False) / "allowlist.d"
    return [SYSTEM_ALLOWLIST_DIR, user]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PythonFunction(_Section):
    """A trusted function a ``python`` job may call by its ``target``."""

    target: str = Field(description="package.module:function")
    network: NetworkPolicy = Field(NetworkPolicy.NONE, description="none (loopback only) or host")
    limits: Limits = Field(default_factory=Limits,
                           description="Overrides of runners.limits (only the fields named)")
    secrets: list[str] = Field(default_factory=list, description="Secrets it receives as files")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"target": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check_target(self) -> PythonFunction:
        if not PYTHON_TARGET.fullmatch(self.target):
            raise ValueError(f"target {self.target!r} must look like package.module:function")
        return self


class PythonSettings(_Section):
    paths: list[Path] = Field(default_factory=list, description="Put first on the child's sys.path")
    functions: list[PythonFunction] = Field(
        default_factory=list,
        description="Trusted functions jobs may call (package.module:function)")
    executable: Path | None = Field(None, description="Interpreter; default: the agent's own")


class KillSettings(_Section):
    sigint_grace_s: float = Field(7.5, ge=0, description="Seconds after SIGINT before SIGTERM")
    sigterm_grace_s: float = Field(2.5, ge=0, description="Seconds after SIGTERM before SIGKILL")


class ArtifactSettings(_Section):
    inline_max_bytes: int = Field(256 << 10, ge=0, description="Largest file sent inline")
    inline_total_bytes: int = Field(1 << 20, ge=0, description="Inline bytes per result")
    max_files: int = Field(256, ge=1, description="Files under out/ before E_OUTPUT_LIMIT")
    upload_url: str | None = Field(None, description="POST target for larger files; may "
                                   "contain {job_id}")
    upload_attempts: int = Field(5, ge=1, le=20, description="Tries per artifact upload")
    upload_timeout_s: float = Field(120.0, gt=0, description="Seconds per upload attempt")


class RunnerSettings(_Section):
    isolation: Literal["bwrap", "none"] = Field(
        "bwrap", description="bwrap: every process job in a bubblewrap sandbox (refused where "
        "it cannot be built); none: no sandbox, announced as a warning everywhere")
    job_user: str = Field("aitbc-job", min_length=1,
                          description="The unprivileged user jobs run as when the agent is root")
    allowlist_dirs: list[Path] = Field(
        default_factory=default_allowlist_dirs,
        description="Folders of allowlist YAML files (system first; later ones override)")
    limits: Limits = Field(default_factory=Limits, description="Defaults for every process job")
    kill: KillSettings = Field(default_factory=KillSettings,
                               description="Cancel escalation: SIGINT, then SIGTERM, then SIGKILL")
    python: PythonSettings = Field(default_factory=PythonSettings,
                                   description="Trusted Python functions")
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings,
                                        description="Files jobs write under out/")
    secrets: dict[str, SecretSource] = Field(
        default_factory=dict,
        description="Named secrets jobs receive as files (each a value, file, credential or "
        "token_object)")

    def secret_values(self, names: list[str]) -> dict[str, bytes]:
        """The named secrets' values, read now (blocking: a token may be asked).

        Raises:
            KeyError: a name is not configured (entries naming one are disabled at load).
            SecretError: a secret cannot be read (its code says why).
        """
        return {name: self.secrets[name].read(token=job_token()) for name in names}
