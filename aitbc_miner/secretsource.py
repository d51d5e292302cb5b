"""Where a secret comes from: the config itself, a file, a systemd credential, or a data
object in the PKCS#11 token; and reading it, with one stable code per way it can fail.

One shape serves the miner key (``miner.key_source``) and every job secret
(``runners.secrets.<name>``)::

    {value: "..."}            # in the config (or its environment variable)
    {file: /run/keys/k}       # a file: for the miner key it must be on tmpfs/ramfs, 0600
    {credential: miner-key}   # $CREDENTIALS_DIRECTORY/miner-key (systemd LoadCredential=)
    {token_object: label}     # a CKO_DATA object in the token of identity.token

Reading a token object opens a session with the PIN of ``identity.token`` (blocking: run
it off the event loop). Every value read is registered with the log redaction.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from . import logs

if TYPE_CHECKING:
    from .config.model import TokenSettings

#: systemd's rule for a credential name: a file name, no slash, not ``.`` or ``..``.
CREDENTIAL_NAME = re.compile(r"(?!\.\.?$)[^/\x00]{1,255}")
CREDENTIALS_DIR_VAR = "CREDENTIALS_DIRECTORY"
#: statfs f_type of the file systems that live in memory only.
_MEMORY_FS = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}
_MAX_BYTES = 1 << 20


class SecretCode(StrEnum):
    """Why a secret could not be used; the code starts the operator's one line."""

    E_SECRET_NOT_FOUND = "E_SECRET_NOT_FOUND"  # no such file, credential or data object
    E_SECRET_UNREADABLE = "E_SECRET_UNREADABLE"  # permission, I/O error, not UTF-8, too big
    E_SECRET_EMPTY = "E_SECRET_EMPTY"  # only whitespace
    E_SECRET_EXPOSED = "E_SECRET_EXPOSED"  # a key file readable by its group or others
    E_SECRET_ON_DISK = "E_SECRET_ON_DISK"  # a key file on a disk, not tmpfs/ramfs
    E_SECRET_TOKEN = "E_SECRET_TOKEN"  # no token configured, or it refused (PIN, label)


SECRET_CODES: dict[SecretCode, str] = {
    SecretCode.E_SECRET_NOT_FOUND: "the file, systemd credential or token data object named "
    "does not exist (or $CREDENTIALS_DIRECTORY is not set)",
    SecretCode.E_SECRET_UNREADABLE: "it exists but cannot be read (permission, I/O, not "
    "UTF-8 text, over 1 MiB)",
    SecretCode.E_SECRET_EMPTY: "it holds nothing but whitespace",
    SecretCode.E_SECRET_EXPOSED: "the miner key file is readable by its group or others",
    SecretCode.E_SECRET_ON_DISK: "the miner key file is on a disk, not on tmpfs or ramfs",
    SecretCode.E_SECRET_TOKEN: "token_object without identity.token, or the token refused "
    "(module, token label, PIN)",
}


class SecretError(Exception):
    """A secret could not be read; ``str()`` is ``CODE: one line``, never the value."""

    def __init__(self, code: SecretCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code


class SecretSource(BaseModel):
    """Exactly one of ``value``, ``file``, ``credential`` or ``token_object``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    value: SecretStr | None = None
    file: Path | None = None
    credential: str | None = None
    token_object: str | None = None

    @field_validator("credential")
    @classmethod
    def _credential_name(cls, name: str | None) -> str | None:
        if name is not None and not CREDENTIAL_NAME.fullmatch(name):
            raise ValueError("a credential is a file name: no '/', not '.' or '..'")
        return name

    @field_validator("token_object")
    @classmethod
    def _label(cls, label: str | None) -> str | None:
        if label is not None and not (label.strip() and label.isprintable()):
            raise ValueError("a token object label is printable and not empty")
        return label

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        given = [n for n in ("value", "file", "credential", "token_object")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of value, file, credential or token_object"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def describe(self) -> str:
        """Where it comes from, for messages (never the value)."""
        if self.file is not None:
            return f"file {self.file}"
        if self.credential is not None:
            return f"credential {self.credential!r}"
        if self.token_object is not None:
            return f"token object {self.token_object!r}"
        return "value"

    def read(self, *, token: TokenSettings | None = None, in_memory: bool = False) -> bytes:
        """The secret's bytes, registered for log redaction.

        ``in_memory`` (the miner key): a ``file`` must be on tmpfs/ramfs and readable by
        its owner only. ``token`` is ``identity.token``, needed for ``token_object``.

        Raises:
            SecretError: with the code saying why.
        """
        if self.value is not None:
            data = self.value.get_secret_value().encode()
        elif self.file is not None:
            data = _read_file(self.file, in_memory=in_memory)
        elif self.credential is not None:
            data = read_credential(self.credential)
        else:
            data = _read_token_object(str(self.token_object), token)
        text = data.decode("utf-8", "replace")
        logs.add_secret(text)
        logs.add_secret(text.strip())  # a file's trailing newline is rarely echoed with it
        return data

    def read_text(self, *, token: TokenSettings | None = None, in_memory: bool = False) -> str:
        """The secret as stripped UTF-8 text (a key, a token)."""
        data = self.read(token=token, in_memory=in_memory)
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SecretError(SecretCode.E_SECRET_UNREADABLE,
                              f"{self.describe()} is not UTF-8 text") from None
        if not text:
            raise SecretError(SecretCode.E_SECRET_EMPTY, f"{self.describe()} is empty")
        return text


def credential_path(name: str) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/name`` when systemd passed this service such a credential."""
    folder = os.environ.get(CREDENTIALS_DIR_VAR)
    path = Path(folder) / name if folder else None
    return path if path is not None and path.is_file() else None


def read_credential(name: str) -> bytes:
    folder = os.environ.get(CREDENTIALS_DIR_VAR)
    if not folder:
        raise SecretError(SecretCode.E_SECRET_NOT_FOUND,
                          f"credential {name!r}: ${CREDENTIALS_DIR_VAR} is not set (systemd "
                          f"sets it for a unit with LoadCredential={name}:...)")
    path = Path(folder) / name
    if not path.is_file():
        raise SecretError(SecretCode.E_SECRET_NOT_FOUND,
                          f"credential {name!r} is not in ${CREDENTIALS_DIR_VAR} ({folder})")
    return _read_file(path, in_memory=False)


def _read_file(path: Path, *, in_memory: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise SecretError(SecretCode.E_SECRET_NOT_FOUND, f"{path} does not exist") from None
    except OSError as exc:
        raise SecretError(SecretCode.E_SECRET_UNREADABLE,
                          f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(SecretCode.E_SECRET_UNREADABLE, f"{path} is not a regular file")
        if in_memory:
            _check_private(path, fd, info.st_mode)
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as exc:
        raise SecretError(SecretCode.E_SECRET_UNREADABLE,
                          f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise SecretError(SecretCode.E_SECRET_UNREADABLE, f"{path} is over 1 MiB")
    return data


def _check_private(path: Path, fd: int, mode: int) -> None:
    """A key file must be its owner's alone, and in memory (what a stolen disk lacks)."""
    if mode & 0o077:
        who = "everyone" if mode & 0o007 else "its group"
        raise SecretError(SecretCode.E_SECRET_EXPOSED,
                          f"{path} is readable by {who} (mode {stat.S_IMODE(mode):04o}); "
                          f"run: chmod 600 {path}")
    kind = filesystem_type(fd)
    if kind not in _MEMORY_FS:
        raise SecretError(SecretCode.E_SECRET_ON_DISK,
                          f"{path} is on a disk (file system 0x{kind:x}), not tmpfs or "
                          "ramfs: a copy of the disk would hold the key; put it under /run "
                          "or use a systemd credential")


def filesystem_type(fd: int) -> int:
    """``statfs(2)``'s ``f_type`` of the file system holding ``fd`` (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.fstatfs(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    # f_type (__fsword_t, a C long) is the first field on every Linux architecture.
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def _read_token_object(label: str, token: TokenSettings | None) -> bytes:
    if token is None or token.module is None:
        raise SecretError(SecretCode.E_SECRET_TOKEN,
                          f"token object {label!r}: no token configured "
                          "(identity.token.module and token_label)")
    from .identity.token import TokenError, open_token, read_data_object

    try:
        session = open_token(token)
    except TokenError as exc:
        raise SecretError(SecretCode.E_SECRET_TOKEN, f"token object {label!r}: {exc}") from None
    try:
        return read_data_object(session, label)
    except TokenError as exc:
        raise SecretError(SecretCode.E_SECRET_NOT_FOUND, str(exc)) from None
    finally:
        session.close()


# The token of identity.token, for job secrets read while the miner runs (set at start and
# on reload by the host; the miner has one token).
_job_token: list[TokenSettings | None] = [None]


def use_token(token: TokenSettings | None) -> None:
    """The token job secrets' ``token_object`` sources read from."""
    _job_token[0] = token


def job_token() -> TokenSettings | None:
    return _job_token[0]
