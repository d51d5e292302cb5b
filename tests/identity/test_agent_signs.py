"""The whole path, as deployed: a real ``aitbc-miner --headless`` whose key is in a SoftHSM2
token, a real reference coordinator process, a client fetching the result over HTTP, and
``aitbc-miner verify-result`` checking it with the exported public key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.identity.conftest import SoftHsm, miner
from tests.integration.conftest import DevnetProc, MinerLauncher, event_is

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(("dialect", "pin_from"), [("2026-01", "file"), ("2026-08", "env")])
def test_the_agent_signs_with_its_token_key_and_the_client_verifies(
        dialect: str, pin_from: str, softhsm: SoftHsm, start_devnet, agent: MinerLauncher,
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a rig key made inside the token and exported for clients
    config = softhsm.config(agent.state_dir)
    assert miner("key", "generate", "--config", str(config)).returncode == 0
    public_key = tmp_path / "rig.pub"
    exported = miner("key", "export-public", "--output", str(public_key),
                     "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    # And a coordinator with one job, and the agent configured to use the token
    devnet: DevnetProc = start_devnet(dialect)
    job_id = devnet.submit({"type": "sha256", "data": "signed by the rig"})
    env = {"IDENTITY__TOKEN__MODULE": str(softhsm.module),
           "IDENTITY__TOKEN__TOKEN_LABEL": softhsm.token_label,
           "IDENTITY__TOKEN__PIN_FILE": str(softhsm.pin_file)}
    if pin_from == "env":  # the PIN in a variable the agent takes out of its environment
        env["IDENTITY__TOKEN__PIN_FILE"] = None
        env["IDENTITY__TOKEN__PIN_ENV"] = "RIG_TOKEN_PIN"
        monkeypatch.setenv("RIG_TOKEN_PIN", softhsm.pin)
    proc = agent.start(devnet, **env)
    # When it runs the job and delivers the result
    proc.wait_for(event_is("outcome_delivered"))
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    assert softhsm.pin.encode() not in environ  # the PIN never sits in its environment
    # Then what a client fetches verifies with the public key alone
    fetched = devnet.http.get(f"/v1/jobs/{job_id}/result",
                              headers=devnet.ready["client_headers"])
    assert fetched.status_code == 200, fetched.text
    document = tmp_path / "fetched.json"
    document.write_text(fetched.text, encoding="utf-8")
    checked = miner("verify-result", str(document), "--public-key", str(public_key),
                    "--job-id", job_id)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"verified: job {job_id}, rig rig-it" in checked.stdout
    # And the same document with one byte of the output changed does not
    output = fetched.json()["result"]["output"]
    flipped = ("0" if output[0] != "0" else "1") + output[1:]
    document.write_text(fetched.text.replace(output, flipped, 1), encoding="utf-8")
    checked = miner("verify-result", str(document), "--public-key", str(public_key))
    assert checked.returncode == 1
    assert "DOES NOT VERIFY: result: the result was changed" in checked.stdout
