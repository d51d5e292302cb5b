"""Opening a PKCS#11 token (YubiKey, HSM; SoftHSM2 in tests) and reading what it holds.

One place knows python-pkcs11's loading, login and error types; the rig key
(:mod:`.rigkey`) and the secret sources (miner key, job secrets as data objects) use it.

    session = open_token(settings.identity.token)      # reads the PIN, logs in
    value = read_data_object(session, "miner-key")     # bytes of a CKO_DATA object

``open_session`` is the same with the module, token label and PIN given directly. Every
call blocks (the module talks to a device): from the event loop, run it through
``asyncio.to_thread``. A session is not safe for concurrent use from several threads:
whoever shares one serializes its calls. PKCS#11 logs in per process, not per session:
while one session is logged in, another opens already logged in (``open_session``
handles that), and closing the session that logged in logs every session out. So the
long-lived session (the rig key's, opened at start) should be the first to log in, and
short reads after it close sessions that never logged in themselves. The PIN never
appears in an error, a log line or a repr; it is registered with the log redaction as
soon as it is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from .. import handoff, logs
from .files import PrivateFileError, read_private_file

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

    from ..config.model import TokenSettings

#: The systemd credential read for the PIN when neither pin_file nor pin_env is set.
PIN_CREDENTIAL = "token-pin"

# PINs taken out of the environment, by variable: the next session (the rig key after
# the miner key, say) needs the PIN again, and the variable is gone by then.
_pins_from_env: dict[str, str] = {}

class TokenError(Exception):
    """The token could not be used; ``str()`` is one line for the operator (no PIN)."""


class WrongPin(TokenError):
    """The token refused the PIN (or it is locked after too many tries)."""


def load_module(module: Path) -> Library:
    """The PKCS#11 module at ``module`` (python-pkcs11 loads each path once a process)."""
    if not module.is_file():
        raise TokenError(f"PKCS#11 module {module} does not exist")
    try:
        return pkcs11.lib(str(module))
    except (OSError, RuntimeError) as exc:
        raise TokenError(f"cannot load PKCS#11 module {module}: {_name(exc)}") from None


def open_session(module: Path, token_label: str, pin: str, *,
                 rw: bool = False) -> pkcs11.Session:
    """A logged-in session on the token labelled ``token_label``; the caller closes it.

    Raises:
        WrongPin: the token refused the PIN, or the PIN is locked.
        TokenError: no such module or token, or the token failed.
    """
    logs.add_secret(pin)
    lib = load_module(module)
    try:
        token = lib.get_token(token_label=token_label)
    except p11.NoSuchToken:
        raise TokenError(f"no token labelled {token_label!r} in {module}") from None
    except p11.MultipleTokensReturned:
        raise TokenError(f"more than one token labelled {token_label!r} in {module}") from None
    except p11.PKCS11Error as exc:
        raise TokenError(f"token {token_label!r}: {_name(exc)}") from None
    try:
        session: pkcs11.Session = token.open(user_pin=pin, rw=rw)
    except p11.UserAlreadyLoggedIn:
        # PKCS#11 logs in per process: another session of ours already proved the PIN.
        session = token.open(rw=rw)
    except p11.PinIncorrect:
        raise WrongPin(f"token {token_label!r} refused the PIN (wrong PIN)") from None
    except p11.PinLocked:
        raise WrongPin(f"token {token_label!r}: the PIN is locked (too many wrong tries)") from None
    except (p11.PinInvalid, p11.PinLenRange, p11.ArgumentsBad):
        raise WrongPin(f"token {token_label!r} refused the PIN (not a valid PIN)") from None
    except p11.PKCS11Error as exc:
        raise TokenError(f"cannot log in to token {token_label!r}: {_name(exc)}") from None
    return session


def open_token(settings: TokenSettings, *, rw: bool = False) -> pkcs11.Session:
    """A logged-in session on the configured token (``identity.token``), PIN read now."""
    if settings.module is None or not settings.token_label:
        raise TokenError("no token configured (identity.token.module and token_label)")
    return open_session(settings.module, settings.token_label, read_pin(settings), rw=rw)


def read_pin(settings: TokenSettings) -> str:
    """The user PIN from ``pin_file``, else ``pin_env`` (then removed from the environment),
    else the systemd credential ``token-pin``."""
    if settings.pin_file is not None:
        pin = _read_pin_file(settings.pin_file)
    elif settings.pin_env is not None:
        # The agent's start moved it out of the environment block (handoff); a command
        # run without that re-exec still has it in os.environ.
        value = handoff.variable(settings.pin_env)
        os.environ.pop(settings.pin_env, None)
        if value is not None and value.strip():
            _pins_from_env[settings.pin_env] = value.strip()
        if settings.pin_env not in _pins_from_env:
            raise TokenError(f"identity.token.pin_env: ${settings.pin_env} is not set")
        pin = _pins_from_env[settings.pin_env]
    else:
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        path = Path(folder) / PIN_CREDENTIAL if folder else None
        if path is None or not path.is_file():
            raise TokenError("no token PIN: set identity.token.pin_file or pin_env (a service "
                             f"may pass the systemd credential {PIN_CREDENTIAL})")
        pin = _read_pin_file(path)
    logs.add_secret(pin)
    return pin


def read_data_object(session: pkcs11.Session, label: str) -> bytes:
    """The value of the one data object (CKO_DATA) labelled ``label``.

    Raises:
        TokenError: none or several such objects, or the token would not give the value.
    """
    try:
        found = list(session.get_objects({Attribute.CLASS: ObjectClass.DATA,
                                          Attribute.LABEL: label}))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise TokenError(f"{what} data objects labelled {label!r} in the token")
        value = found[0][Attribute.VALUE]
    except p11.PKCS11Error as exc:
        raise TokenError(f"cannot read data object {label!r}: {_name(exc)}") from None
    if not isinstance(value, bytes):
        raise TokenError(f"data object {label!r} has no byte value")
    return value


def _read_pin_file(path: Path) -> str:
    try:
        text = read_private_file(path, "token PIN file").decode("utf-8").strip()
    except PrivateFileError as exc:
        raise TokenError(str(exc)) from None
    except UnicodeDecodeError:
        raise TokenError(f"token PIN file {path} is not UTF-8 text") from None
    if not text:
        raise TokenError(f"token PIN file {path} is empty")
    return text


def _name(exc: Exception) -> str:
    """A PKCS#11 error as its type name (the library's messages are often empty)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
