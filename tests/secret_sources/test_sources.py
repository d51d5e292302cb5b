"""Secret sources: the config shape, each source read for real, and each refusal's code."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from aitbc_miner import logs
from aitbc_miner.config import ConfigError, load_settings
from aitbc_miner.runners.settings import RunnerSettings
from aitbc_miner.secretsource import SecretCode, SecretError, SecretSource

SHM = Path("/dev/shm")


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A private folder on tmpfs (where systemd's credentials and key files live)."""
    if not SHM.is_dir():
        pytest.skip("no /dev/shm tmpfs on this host")
    folder = Path(tempfile.mkdtemp(prefix="aitbc-test-secrets-", dir=SHM))
    yield folder
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _code(exc: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc.value).split("config error: miner.key_source: ")[-1].split(":")[0]


@pytest.mark.parametrize("spec, problem", [
    ({}, "set exactly one of value, file, credential or token_object"),
    ({"file": "/run/k", "credential": "k"}, "(got file, credential)"),
    ({"credential": "../etc/shadow"}, "a credential is a file name"),
    ({"credential": ".."}, "a credential is a file name"),
    ({"token_object": " "}, "a token object label is printable"),
    ({"vault": "x"}, "Extra inputs are not permitted"),
])
def test_a_source_is_exactly_one_well_formed_place(spec: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SecretSource.model_validate(spec)
    assert problem in str(caught.value)


def test_the_miner_key_has_one_source_and_the_error_names_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, overrides={"miner": {"key": "k1", "key_source": {"credential": "k"}}},
                      env={})
    assert "set one of key, key_file or key_source, not key and key_source" in str(caught.value)


def test_a_credential_is_read_from_the_credentials_directory(
        shm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"cred-{uuid.uuid4().hex}"
    _write(shm_dir / "miner-key", key + "\n", 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(shm_dir))
    settings = load_settings(None, overrides={"miner": {"key_source": {"credential": "miner-key"}}},
                             env={})
    assert settings.miner_key() == key
    assert logs.redact(f"x {key} y") == "x *** y"
    assert key not in repr(settings)


def test_a_missing_credential_is_not_found(shm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = {"miner": {"key_source": {"credential": "miner-key"}}}
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, overrides=source, env={}).miner_key()
    assert _code(caught) == "E_SECRET_NOT_FOUND"
    assert "$CREDENTIALS_DIRECTORY is not set" in str(caught.value)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(shm_dir))
    with pytest.raises(ConfigError) as caught:
        load_settings(None, overrides=source, env={}).miner_key()
    assert _code(caught) == "E_SECRET_NOT_FOUND"


def test_a_key_file_on_tmpfs_and_private_is_read(shm_dir: Path) -> None:
    key = f"file-{uuid.uuid4().hex}"
    path = _write(shm_dir / "miner.key", f"  {key}\n")
    settings = load_settings(None, overrides={"miner": {"key_source": {"file": str(path)}}},
                             env={})
    assert settings.miner_key() == key


@pytest.mark.parametrize("mode, code, words", [
    (0o644, SecretCode.E_SECRET_EXPOSED, "readable by everyone (mode 0644)"),
    (0o640, SecretCode.E_SECRET_EXPOSED, "readable by its group (mode 0640)"),
])
def test_a_key_file_others_can_read_is_refused(shm_dir: Path, mode: int, code: SecretCode,
                                               words: str) -> None:
    path = _write(shm_dir / "miner.key", f"key-{uuid.uuid4().hex}", mode)
    with pytest.raises(SecretError) as caught:
        SecretSource(file=path).read(in_memory=True)
    assert caught.value.code is code
    assert words in str(caught.value) and f"chmod 600 {path}" in str(caught.value)


def test_a_key_file_on_a_disk_is_refused(tmp_path: Path) -> None:
    from aitbc_miner.secretsource import filesystem_type

    value = f"key-{uuid.uuid4().hex}"
    path = _write(tmp_path / "miner.key", value)
    fd = os.open(path, os.O_RDONLY)
    try:
        on_disk = filesystem_type(fd) not in (0x01021994, 0x858458F6)
    finally:
        os.close(fd)
    if not on_disk:
        pytest.skip(f"{tmp_path} is itself on tmpfs here")
    with pytest.raises(SecretError) as caught:
        SecretSource(file=path).read(in_memory=True)
    assert caught.value.code is SecretCode.E_SECRET_ON_DISK
    assert SecretSource(file=path).read() == value.encode()  # a job secret's may be on disk


def test_an_empty_or_missing_key_file(shm_dir: Path) -> None:
    empty = _write(shm_dir / "empty", " \n")
    with pytest.raises(SecretError) as caught:
        SecretSource(file=empty).read_text(in_memory=True)
    assert caught.value.code is SecretCode.E_SECRET_EMPTY
    with pytest.raises(SecretError) as caught:
        SecretSource(file=shm_dir / "nope").read_text(in_memory=True)
    assert caught.value.code is SecretCode.E_SECRET_NOT_FOUND


def test_a_token_object_needs_a_token() -> None:
    with pytest.raises(SecretError) as caught:
        SecretSource(token_object="miner-key").read()
    assert caught.value.code is SecretCode.E_SECRET_TOKEN
    assert "identity.token.module" in str(caught.value)


def test_job_secrets_come_from_credentials_too(shm_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    value = f"job-{uuid.uuid4().hex}"
    _write(shm_dir / "db-password", value, 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(shm_dir))
    settings = RunnerSettings.model_validate(
        {"allowlist_dirs": [], "secrets": {"db": {"credential": "db-password"},
                                           "tok": {"token_object": "job-token"}}})
    assert settings.secret_values(["db"]) == {"db": value.encode()}
    assert logs.redact(value) == "***"
    with pytest.raises(SecretError) as caught:  # no token configured in this process
        settings.secret_values(["tok"])
    assert caught.value.code is SecretCode.E_SECRET_TOKEN


def test_a_secret_never_shows_in_a_config_error_or_render(tmp_path: Path) -> None:
    from aitbc_miner.config import render_effective

    value = f"inline-{uuid.uuid4().hex}"
    settings = load_settings(None, overrides={
        "miner": {"key": value}, "runners": {"secrets": {"a": {"value": value}}}}, env={})
    assert value not in render_effective(settings)
    for bad in ({"miner": {"key_source": {"value": value}}},
                {"runners": {"secrets": {"a": {"value": value, "file": "/x"}}}},
                {"runners": {"secrets": {"a": {"value": 12345678901234}}}}):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, overrides=bad, env={})
        assert value not in str(caught.value) and "12345678901234" not in str(caught.value)


def test_every_code_has_its_row_in_the_docs() -> None:
    from aitbc_miner.secretsource import SECRET_CODES

    text = (Path(__file__).resolve().parents[2] / "docs" / "secrets.md").read_text()
    assert set(SECRET_CODES) == set(SecretCode)
    for code, meaning in SECRET_CODES.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{code.value}` |"))
        assert _plain(row.split("|")[2]) == _plain(meaning), code


def _plain(text: str) -> str:
    return " ".join(text.replace("`", "").split())
