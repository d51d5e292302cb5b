"""The default rig key: a private file in the state dir, made on first run; key ids; the
key and verify-result commands' answers to bad input."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from aitbc_miner.config import load_settings
from aitbc_miner.host.cli import main
from aitbc_miner.identity.rigkey import (
    FileRigKey,
    RigKeyError,
    key_id_of,
    load_public_key,
    open_rig_key,
    public_raw,
)
from aitbc_miner.identity.signed_result import ResultSigner, result_digest
from aitbc_miner.receipts import canonical_json
from tests.identity.conftest import miner


def config_for(tmp_path: Path) -> Path:
    path = tmp_path / "miner.yaml"
    path.write_text(f"paths: {{state_dir: {tmp_path / 'state'}}}\n", encoding="utf-8")
    return path


def test_first_run_makes_a_private_key_file_and_keeps_it(tmp_path: Path) -> None:
    settings = load_settings(config_for(tmp_path), env={})
    first = open_rig_key(settings, create=True)
    path = tmp_path / "state" / "identity.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert open_rig_key(settings, create=True).key_id == first.key_id  # never replaced
    # The key id: the first 16 hex digits of SHA-256 over the raw 32-byte public key
    assert first.key_id == hashlib.sha256(first.public_raw).hexdigest()[:16]


def test_a_key_file_others_can_read_is_refused_in_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    assert miner("key", "generate", "--config", str(config)).returncode == 0
    key_file = tmp_path / "state" / "identity.key"
    key_file.chmod(0o644)
    done = miner("key", "show", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"aitbc-miner: rig key: rig key file {key_file} is readable by others (mode 0644); "
        f"refusing it. Run: chmod 600 {key_file}"]
    with pytest.raises(RigKeyError, match="readable by its group"):
        key_file.chmod(0o640)
        FileRigKey.load(key_file)


def test_import_export_and_show_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "rig.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pem.chmod(0o600)
    config = str(config_for(tmp_path))
    assert main(["key", "import", str(pem), "--config", config]) == 0
    assert main(["key", "import", str(pem), "--config", config]) == 2  # never replaced
    capsys.readouterr()
    assert main(["key", "show", "--format", "json", "--config", config]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key_id"] == key_id_of(public_raw(key.public_key()))
    assert main(["key", "export-public", "--format", "raw", "--config", config]) == 0
    raw = capsys.readouterr().out.strip()
    assert raw == shown["public_key"]
    assert public_raw(load_public_key(raw)) == public_raw(key.public_key())


def test_verify_result_tells_bad_input_from_a_mismatch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rig = FileRigKey.create(tmp_path / "identity.key")
    other = FileRigKey.create(tmp_path / "other.key")
    signed = ResultSigner(rig, "rig-1").sign_blocking("job-1", {"output": "x"}, {})
    document = tmp_path / "result.json"
    document.write_text(json.dumps({"result": signed, "receipt": None}), encoding="utf-8")
    raw = rig.info().public_key

    def run(path: Path | str, key: str) -> int:
        return main(["verify-result", str(path), f"--public-key={key}"])  # may start with -

    assert run(document, raw) == 0
    assert run(document, other.info().public_key) == 1  # signed by another rig
    not_json = tmp_path / "not.json"
    not_json.write_text("{not json", encoding="utf-8")
    assert run(not_json, raw) == 2
    assert run(tmp_path / "missing.json", raw) == 2
    assert run(document, "not-a-key") == 2
    unrelated = tmp_path / "unrelated.json"
    unrelated.write_text('{"hello": 1}', encoding="utf-8")
    assert run(unrelated, raw) == 2
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text('{"result": {"output": "x"}, "receipt": null}', encoding="utf-8")
    assert run(unsigned, raw) == 1
    said = capsys.readouterr()
    assert "not signed" in said.out and "bad input" in said.err


def test_the_signed_digest_is_the_canonical_json_of_the_result() -> None:
    # Key order, spacing and null values do not change it (the receipts' recipe)
    result = {"b": [1, None, 2.5], "a": "é", "z": None}
    expected = hashlib.sha256(b'{"a":"\\u00e9","b":[1,2.5]}').hexdigest()
    assert result_digest(result) == expected
    assert canonical_json({"z": None, "b": [1, None, 2.5], "a": "é"}) == \
        b'{"a":"\\u00e9","b":[1,2.5]}'


def test_the_python_in_the_docs_verifies_a_signed_result(tmp_path: Path) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import PublicFormat

    # The few lines of Python docs/identity.md gives clients, as written there
    text = (Path(__file__).resolve().parents[2] / "docs" / "identity.md").read_text("utf-8")
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    snippet = next(block for block in blocks if "def verify(" in block)
    namespace: dict[str, object] = {}
    exec(snippet.split("\nfetched = ", 1)[0], namespace)  # the definitions
    verify = namespace["verify"]
    rig = FileRigKey.create(tmp_path / "identity.key")
    pem = rig.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signed = ResultSigner(rig, "rig-1").sign_blocking("job-1", {"output": "x", "n": None},
                                                      {"duration_ms": 5})
    fetched = json.loads(json.dumps({"result": signed, "receipt": None}))  # as over HTTP
    assert verify(fetched["result"], pem, "job-1") is True
    assert verify(fetched["result"], pem, "job-2") is False
    assert verify({**fetched["result"], "output": "y"}, pem, "job-1") is False
    forged = {**signed, "rig_signature": {**signed["rig_signature"], "rig_id": "rig-2"}}
    with pytest.raises(InvalidSignature):
        verify(forged, pem, "job-1")


def test_what_is_signed_is_what_travels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A runner's result with a number key and a tuple: signed as the coordinator gets it
    rig = FileRigKey.create(tmp_path / "identity.key")
    signed = ResultSigner(rig, "rig-1").sign_blocking("job-1", {1: "a", "b": (1, 2)}, {})
    from aitbc_miner.identity.signed_result import verify_result

    assert verify_result(json.loads(json.dumps(signed)), rig.public_key, job_id="job-1").ok
    # A hostile file (nested past the parser's depth) is bad input, never a traceback
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert main(["verify-result", str(deep), f"--public-key={rig.info().public_key}"]) == 2
    assert "bad input" in capsys.readouterr().err
