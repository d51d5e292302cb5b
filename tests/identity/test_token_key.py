"""The rig key in a real SoftHSM2 token: made inside it, signs, never leaves it."""

from __future__ import annotations

import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from aitbc_miner.identity.rigkey import TokenRigKey, key_id_of, load_public_key, public_raw
from aitbc_miner.identity.signed_result import ResultSigner, verify_result
from aitbc_miner.identity.token import WrongPin, open_session, open_token, read_data_object
from tests.identity.conftest import PIN, SoftHsm, miner


def test_key_made_in_the_token_signs_50_results_verified_by_the_public_key_alone(
        softhsm: SoftHsm, tmp_path) -> None:
    # Given a token the test initialised, and the rig key generated inside it by the CLI
    config = softhsm.config(tmp_path / "state")
    made = miner("key", "generate", "--config", str(config))
    assert made.returncode == 0, made.stderr
    exported = miner("key", "export-public", "--config", str(config))
    assert exported.returncode == 0 and "BEGIN PUBLIC KEY" in exported.stdout
    public_key = load_public_key(exported.stdout)  # all a client holds
    rig_key = TokenRigKey.open(softhsm.settings())
    try:
        # It was generated inside the token and can never be extracted
        facts = dict(rig_key.info().facts)
        assert facts == {"SENSITIVE": "true", "EXTRACTABLE": "false",
                         "NEVER_EXTRACTABLE": "true", "ALWAYS_SENSITIVE": "true",
                         "LOCAL": "true"}
        assert rig_key.key_id == key_id_of(public_raw(public_key))
        # When it signs 50 results
        signer = ResultSigner(rig_key, "rig-7")
        signed = [signer.sign_blocking(f"job{i}", {"output": f"answer {i}", "n": i},
                                       {"duration_ms": i}) for i in range(50)]
    finally:
        rig_key.close()
    # Then each verifies with the exported public key alone, and only for its own job
    checks = [verify_result(result, public_key, job_id=f"job{i}")
              for i, result in enumerate(signed)]
    assert [c.reason for c in checks if not c.ok] == []
    assert {c.rig_id for c in checks} == {"rig-7"}
    assert not verify_result(signed[0], public_key, job_id="job1").ok


def test_the_private_key_cannot_be_exported(softhsm: SoftHsm) -> None:
    TokenRigKey.create(softhsm.settings()).close()
    session = open_token(softhsm.settings(), rw=True)
    try:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY,
                                  key_type=KeyType.EC_EDWARDS, label="aitbc-rig")
        # Reading its value: the token refuses (CKR_ATTRIBUTE_SENSITIVE)
        with pytest.raises(p11.AttributeSensitive):
            private[Attribute.VALUE]
        # Making it extractable after the fact: refused (CKR_ATTRIBUTE_READ_ONLY)
        with pytest.raises(p11.AttributeReadOnly):
            private[Attribute.EXTRACTABLE] = True
        # Wrapping it out under a key of our own: refused (CKR_KEY_UNEXTRACTABLE)
        wrapper = session.generate_key(KeyType.AES, 256, template={
            Attribute.WRAP: True, Attribute.TOKEN: False})
        with pytest.raises(p11.KeyUnextractable):
            wrapper.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    finally:
        session.close()


def test_an_imported_key_is_locked_in_the_token_too(softhsm: SoftHsm, tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "rig.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pem.chmod(0o600)
    config = softhsm.config(tmp_path / "state")
    done = miner("key", "import", str(pem), "--config", str(config))
    assert done.returncode == 0, done.stderr
    shown = miner("key", "show", "--format", "json", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    import json

    info = json.loads(shown.stdout)
    assert info["key_id"] == key_id_of(public_raw(key.public_key()))
    assert info["attributes"]["EXTRACTABLE"] == "false"
    assert info["attributes"]["LOCAL"] == "false"  # honest: it was made outside


@pytest.mark.parametrize("command", [["key", "show"], ["--headless"]],
                         ids=["key-show", "agent-start"])
def test_a_wrong_pin_is_one_clear_line_and_exit_2(softhsm: SoftHsm, tmp_path,
                                                  command: list[str]) -> None:
    TokenRigKey.create(softhsm.settings()).close()
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin-5150\n", encoding="utf-8")
    wrong.chmod(0o600)
    config = softhsm.config(tmp_path / "state", pin_file=wrong)
    done = miner(*command, "--config", str(config),
                 env={"AITBC_MINER_MINER__KEY": "miner-key-for-test"})
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "wrong PIN" in lines[0] and "rig-test" in lines[0]
    assert "not-the-pin-5150" not in done.stderr + done.stdout


def test_token_helpers_read_a_data_object_and_refuse_a_wrong_pin(softhsm: SoftHsm) -> None:
    session = open_session(softhsm.module, softhsm.token_label, PIN, rw=True)
    try:
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "miner-key",
                               Attribute.VALUE: b"s3cret", Attribute.TOKEN: True,
                               Attribute.PRIVATE: True})
        assert read_data_object(session, "miner-key") == b"s3cret"
    finally:
        session.close()
    with pytest.raises(WrongPin, match="wrong PIN"):
        open_session(softhsm.module, softhsm.token_label, "0000-wrong")


def test_token_readers_after_the_rig_key_leave_it_logged_in(
        softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the PIN in an environment variable, and the rig key's session open
    import os

    from aitbc_miner.config.model import TokenSettings

    monkeypatch.setenv("RIG_TEST_PIN", PIN)
    settings = TokenSettings(module=softhsm.module, token_label=softhsm.token_label,
                             pin_env="RIG_TEST_PIN")
    TokenRigKey.create(softhsm.settings()).close()
    rig_key = TokenRigKey.open(settings)
    try:
        assert "RIG_TEST_PIN" not in os.environ  # taken out once read
        # When another part of the miner opens and closes sessions on the same token
        for _ in range(2):
            open_token(settings).close()
        # Then the rig key still signs: its login outlived their sessions
        assert rig_key.public_key.verify(rig_key.sign(b"x"), b"x") is None
    finally:
        rig_key.close()
