"""Results signed by the rig (a SoftHSM2 token key) verify after the reference coordinator,
in both dialects, as a client fetches them; one byte changed and they do not."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from aitbc_miner.devnet import Devnet
from aitbc_miner.host.cli import main
from aitbc_miner.identity import token
from aitbc_miner.identity.rigkey import TokenRigKey
from aitbc_miner.identity.signed_result import SIGNATURE_KEY, ResultSigner
from tests.identity.conftest import SoftHsm


def verify(capsys: pytest.CaptureFixture[str], document: str | bytes, public_key: Path,
           folder: Path, *extra: str) -> tuple[int, str]:
    """``aitbc-miner verify-result`` on ``document`` (written to a file, as fetched)."""
    path = folder / "fetched.json"
    path.write_bytes(document.encode() if isinstance(document, str) else document)
    capsys.readouterr()
    code = main(["verify-result", str(path), "--public-key", str(public_key), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def one_byte_changed(text: str, needle: str, *, last: bool = False) -> str:
    """``text`` with the character after ``needle`` (its first or last occurrence)
    replaced by another one."""
    at = (text.rindex(needle) if last else text.index(needle)) + len(needle)
    return text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1:]  # JSON stays valid


async def test_signed_results_verify_after_the_coordinator(
        devnet: Devnet, make_engine, run_engine, softhsm: SoftHsm, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a rig whose key lives in a token, counting logins and where it signs
    logins: list[str] = []
    real_open = token.open_session

    def counted(*args, **kwargs):
        logins.append(threading.current_thread().name)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(token, "open_session", counted)
    rig_key = TokenRigKey.create(softhsm.settings())
    signing_threads: set[bool] = set()
    real_sign = rig_key.sign

    def sign(data: bytes) -> bytes:
        signing_threads.add(threading.current_thread() is threading.main_thread())
        return real_sign(data)

    rig_key.sign = sign  # type: ignore[method-assign]
    public_key = tmp_path / "rig.pub"
    public_key.write_bytes(rig_key.public_key.public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    jobs = [(await devnet.submit_job({"type": "sha256", "data": f"d{i}"}))["job_id"]
            for i in range(3)]
    engine = make_engine(devnet.url, pinned_key=devnet.public_key_id)
    engine.core.signer = ResultSigner(rig_key, "rig-test")
    # When the rig runs them and the coordinator takes the results
    running = run_engine(engine)
    await engine.wait_until(lambda s: s.counters.delivered == 3, timeout=20)
    await running.stop()
    rig_key.close()
    # Then one login served every signature, all made off the event loop's thread
    assert len(logins) == 1 and signing_threads == {False}
    for job_id in jobs:
        # What a client fetches: the job's result (with its receipt), and the receipt alone
        fetched = await devnet.client_request("GET", f"/jobs/{job_id}/result")
        assert fetched.status_code == 200
        assert SIGNATURE_KEY in fetched.json()["result"]  # the job record kept it
        receipt = await devnet.client_request("GET", f"/jobs/{job_id}/receipt")
        assert receipt.status_code == 200
        assert SIGNATURE_KEY in receipt.json()["metadata"]["result"]  # so did the receipt
        # Both verify with the public key alone, for this job
        code, said = verify(capsys, fetched.text, public_key, tmp_path)
        assert code == 0, said
        assert f"verified: job {job_id}, rig rig-test" in said
        assert "receipt.metadata.result" in said and "receipt.metadata.metrics" in said
        code, said = verify(capsys, receipt.text, public_key, tmp_path, "--job-id", job_id)
        assert code == 0, said
        # One byte changed in the output, in the copy inside the receipt, or in the
        # metrics the receipt billed: it does not verify (exit 1)
        body = json.dumps(fetched.json())
        for altered in (one_byte_changed(body, '"output": "'),
                        one_byte_changed(body, '"output": "', last=True),
                        one_byte_changed(body, '"duration_ms": '),
                        one_byte_changed(body, '"duration_ms": ', last=True)):
            assert altered != body
            code, said = verify(capsys, altered, public_key, tmp_path)
            assert code == 1, said
            assert "DOES NOT VERIFY" in said
    # A result for another job is caught when the client names the job it asked for
    code, said = verify(capsys, fetched.text, public_key, tmp_path, "--job-id", jobs[0])
    assert code == 1 and "not " + jobs[0] in said

