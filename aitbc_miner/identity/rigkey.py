"""The rig key: the Ed25519 key a rig signs its results with, in a PKCS#11 token or a file.

* Token (``identity.token.module`` set): the key pair labelled ``key_label`` lives in the
  token. ``generate`` makes it inside the token, sensitive and never extractable; only
  signatures and the public key come out. One logged-in session is kept for the life of
  the key (no login per signature); calls on it are serialized.
* File (the default): a PKCS#8 PEM file, mode 0600, ``identity.key`` in the state dir
  unless ``identity.key_file`` names another; made on first run. A key file its group
  or others may read is refused.

The key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key:
short, stable, and the same wherever the key lives (docs/identity.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pkcs11
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from ..receipts import b64url
from .files import PrivateFileError, read_private_file, write_private_file
from .token import TokenError, open_token

if TYPE_CHECKING:
    from ..config.model import Settings, TokenSettings

KEY_FILE_NAME = "identity.key"  # in the state dir, when identity.key_file is unset
KEY_ID_HEX_DIGITS = 16
# DER of the Ed25519 curve's object identifier (1.3.101.112), CKA_EC_PARAMS of its keys.
ED25519_PARAMS = bytes.fromhex("06032b6570")


class RigKeyError(Exception):
    """The rig key is missing, unreadable or refused; ``str()`` is one line, no secret."""


def key_id_of(public_raw: bytes) -> str:
    """The short, stable id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_HEX_DIGITS]


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key as ``key export-public`` writes it: PEM, or URL-safe base64 of the raw
    32 bytes (the form receipts use for the coordinator's key)."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
            if not isinstance(key, Ed25519PublicKey):
                raise RigKeyError("the public key is not an Ed25519 key")
            return key
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error, UnicodeEncodeError, UnsupportedAlgorithm):
        raise RigKeyError("not an Ed25519 public key (PEM, or URL-safe base64 of 32 "
                          "bytes)") from None


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ``key show`` prints: never anything secret."""

    key_id: str
    public_key: str  # URL-safe base64 of the raw 32 bytes
    store: str  # "file" or "token"
    location: str  # the file, or the token and label
    facts: tuple[tuple[str, str], ...] = ()  # token attributes that prove non-export


class RigKey(ABC):
    """An Ed25519 signing key; ``sign`` may block (a token): call it off the event loop
    when ``blocking`` is true."""

    blocking: bool = False

    @property
    @abstractmethod
    def public_raw(self) -> bytes: ...

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_raw)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_raw)

    @abstractmethod
    def sign(self, data: bytes) -> bytes: ...

    @abstractmethod
    def info(self) -> KeyInfo: ...

    def close(self) -> None:  # noqa: B027 - only a token key holds something open
        """Give back what the key holds open (a token session)."""


class FileRigKey(RigKey):
    def __init__(self, key: Ed25519PrivateKey, path: Path) -> None:
        self._key = key
        self.path = path
        self._public = public_raw(key.public_key())

    @property
    def public_raw(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def info(self) -> KeyInfo:
        return KeyInfo(self.key_id, b64url(self._public), "file", str(self.path))

    @classmethod
    def load(cls, path: Path) -> FileRigKey:
        if not os.path.lexists(path):
            raise RigKeyError(f"no rig key at {path} yet: `aitbc-miner key generate` makes "
                              "one (the miner makes one on its first run)")
        try:
            data = read_private_file(path, "rig key file")
        except PrivateFileError as exc:
            raise RigKeyError(str(exc)) from None
        return cls(_private_from_pem(data, path), path)

    @classmethod
    def create(cls, path: Path, key: Ed25519PrivateKey | None = None) -> FileRigKey:
        """Write a new key file (``key``, else a fresh key); an existing one is kept."""
        key = key or Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        try:
            write_private_file(path, pem)
        except FileExistsError:
            raise RigKeyError(f"rig key file {path} exists; a rig identity is never "
                              "replaced: move that file away first") from None
        except OSError as exc:
            raise RigKeyError(f"cannot write rig key file {path}: {exc.strerror}") from None
        return cls(key, path)


class TokenRigKey(RigKey):
    """A key pair in a PKCS#11 token, over one session kept open (calls serialized)."""

    blocking = True

    def __init__(self, session: pkcs11.Session, private: Any, public_raw: bytes,
                 where: str) -> None:
        self._session = session
        self._private = private
        self._public = public_raw
        self._where = where
        self._lock = threading.Lock()

    @property
    def public_raw(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        with self._lock:
            try:
                signature: bytes = self._private.sign(data, mechanism=Mechanism.EDDSA)
            except p11.PKCS11Error as exc:
                raise RigKeyError(f"the token could not sign ({type(exc).__name__})") from None
        return signature

    def info(self) -> KeyInfo:
        names = (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.NEVER_EXTRACTABLE,
                 Attribute.ALWAYS_SENSITIVE, Attribute.LOCAL)
        facts = []
        with self._lock:
            for name in names:
                try:
                    facts.append((name.name, str(bool(self._private[name])).lower()))
                except p11.PKCS11Error:
                    facts.append((name.name, "unknown"))
        return KeyInfo(self.key_id, b64url(self._public), "token", self._where, tuple(facts))

    def close(self) -> None:
        with self._lock:
            self._session.close()

    @classmethod
    def open(cls, settings: TokenSettings) -> TokenRigKey:
        """The key pair labelled ``key_label`` in the configured token."""
        session = open_token(settings, rw=True)
        try:
            return cls._from_session(session, settings)
        except BaseException:
            session.close()
            raise

    @classmethod
    def create(cls, settings: TokenSettings,
               key: Ed25519PrivateKey | None = None) -> TokenRigKey:
        """Make the key pair inside the token (``key`` None), or import ``key`` into it;
        either way the private key is sensitive and never extractable from then on."""
        session = open_token(settings, rw=True)
        try:
            if any(half is not None for half in _find_pair(session, settings.key_label)):
                raise RigKeyError(
                    f"token {settings.token_label!r} already holds a key labelled "
                    f"{settings.key_label!r}; a rig identity is never replaced: remove it "
                    "with the token's own tools first")
            try:
                if key is None:
                    _generate_pair(session, settings.key_label)
                else:
                    _import_pair(session, settings.key_label, key)
            except p11.PKCS11Error as exc:
                raise RigKeyError(f"the token refused to make the key "
                                  f"({type(exc).__name__})") from None
            return cls._from_session(session, settings)
        except BaseException:
            session.close()
            raise

    @classmethod
    def _from_session(cls, session: pkcs11.Session, settings: TokenSettings) -> TokenRigKey:
        private, public = _find_pair(session, settings.key_label)
        if private is None or public is None:
            raise RigKeyError(
                f"no Ed25519 key pair labelled {settings.key_label!r} in token "
                f"{settings.token_label!r}: run `aitbc-miner key generate`")
        where = f"token {settings.token_label!r} key {settings.key_label!r}"
        return cls(session, private, _ec_point_raw(public), where)


# --- choosing by the config ---------------------------------------------------------


def key_file_path(settings: Settings) -> Path:
    return settings.identity.key_file or settings.paths.effective_state_dir / KEY_FILE_NAME


def uses_token(settings: Settings) -> bool:
    return settings.identity.token.module is not None


def open_rig_key(settings: Settings, *, create: bool = False) -> RigKey:
    """The configured rig key; with ``create``, a missing key *file* is made (first run).
    A token key is never made implicitly: ``key generate`` does that, on purpose.

    Raises:
        RigKeyError, TokenError (WrongPin): one line each.
    """
    if uses_token(settings):
        return TokenRigKey.open(settings.identity.token)
    path = key_file_path(settings)
    if create and not os.path.lexists(path):
        try:
            return FileRigKey.create(path)
        except RigKeyError:
            if not os.path.lexists(path):  # not a race with another first run
                raise
    return FileRigKey.load(path)


def generate_rig_key(settings: Settings) -> RigKey:
    if uses_token(settings):
        return TokenRigKey.create(settings.identity.token)
    return FileRigKey.create(key_file_path(settings))


def import_rig_key(settings: Settings, source: Path) -> RigKey:
    """Import the PKCS#8 PEM private key in ``source`` (``openssl genpkey -algorithm
    ed25519`` writes one) as the rig key: into the token, or as the key file."""
    try:
        data = read_private_file(source, "key to import")
    except PrivateFileError as exc:
        raise RigKeyError(str(exc)) from None
    key = _private_from_pem(data, source)
    if uses_token(settings):
        return TokenRigKey.create(settings.identity.token, key)
    return FileRigKey.create(key_file_path(settings), key)


# --- helpers ----------------------------------------------------------------------------


def _private_from_pem(data: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise RigKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RigKeyError(f"{path} holds a key that is not Ed25519")
    return key


def _find_pair(session: pkcs11.Session, label: str) -> tuple[Any, Any]:
    """The private and public key objects labelled ``label`` (None where absent)."""
    found: list[Any] = []
    for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        try:
            found.append(session.get_key(object_class=cls, key_type=KeyType.EC_EDWARDS,
                                         label=label))
        except p11.NoSuchKey:
            found.append(None)
        except p11.MultipleObjectsReturned:
            raise TokenError(f"more than one key labelled {label!r} in the token") from None
    return found[0], found[1]


def _ec_point_raw(public: Any) -> bytes:
    """CKA_EC_POINT of an Ed25519 key: the raw 32 bytes, or DER OCTET STRING of them."""
    point = bytes(public[Attribute.EC_POINT])
    if len(point) == 34 and point[:2] == b"\x04\x20":
        point = point[2:]
    if len(point) != 32:
        raise RigKeyError("the token's public key is not a 32-byte Ed25519 point")
    return point


def _private_template() -> dict[Attribute, Any]:
    return {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
            Attribute.PRIVATE: True, Attribute.TOKEN: True}


def _generate_pair(session: pkcs11.Session, label: str) -> None:
    session.generate_keypair(
        KeyType.EC_EDWARDS, 0, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
        label=label, public_template={Attribute.EC_PARAMS: ED25519_PARAMS,
                                      Attribute.VERIFY: True},
        private_template=_private_template())


def _import_pair(session: pkcs11.Session, label: str, key: Ed25519PrivateKey) -> None:
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw = public_raw(key.public_key())
    common = {Attribute.KEY_TYPE: KeyType.EC_EDWARDS, Attribute.LABEL: label,
              Attribute.EC_PARAMS: ED25519_PARAMS, Attribute.TOKEN: True}
    session.create_object({**common, Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                           Attribute.EC_POINT: b"\x04\x20" + raw, Attribute.VERIFY: True})
    session.create_object({**common, **_private_template(),
                                  Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                  Attribute.VALUE: seed})
