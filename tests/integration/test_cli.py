"""The ``aitbc-miner`` command as an operator runs it: exit codes, secrecy, imports, demo."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MINER_EXE, REPO, DevnetProc, MinerLauncher, event_is

pytestmark = pytest.mark.timeout(60)

SECRET = "k3y-S3CRET-7f9a-never-print-me"  # a miner key distinctive enough to grep for


def run_cli(miner: MinerLauncher, *args: str, timeout: float = 30,
            **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MINER_EXE), *args], env=miner.env(None, **settings),
                          cwd=miner.root, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error"), lines
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines


# --- exit code 2: configuration errors ------------------------------------------------


def test_a_config_file_that_is_not_yaml_exits_2_with_one_line(miner: MinerLauncher) -> None:
    # Given a config file with broken YAML
    bad = miner.root / "bad.yaml"
    bad.write_text("coordinator:\n  url: [http://x\nslots: {cpu: 2\n", encoding="utf-8")
    # When the headless miner starts with it
    result = run_cli(miner, "--headless", "--config", str(bad))
    # Then it exits 2 naming the file, in one line, without a traceback
    assert_one_line_error(result, str(bad))


@pytest.mark.parametrize("where", ["file", "env"])
def test_an_unknown_config_key_exits_2_with_one_line(miner: MinerLauncher, where: str) -> None:
    # Given an unknown key, in the file or in the environment
    cfg = miner.root / "unknown.yaml"
    cfg.write_text("slots:\n  cpu: 2\n  tpu: 1\n" if where == "file" else "{}\n",
                   encoding="utf-8")
    extra = {} if where == "file" else {"SLOTZ__CPU": "2"}
    # When the miner starts
    result = run_cli(miner, "--headless", "--config", str(cfg), **extra)
    # Then it exits 2 and names the key
    assert_one_line_error(result, "tpu" if where == "file" else "slotz")


def test_a_missing_miner_key_exits_2_with_one_line(miner: MinerLauncher) -> None:
    # Given no miner key anywhere
    # When the headless miner starts
    result = run_cli(miner, "--headless", MINER__KEY=None)  # type: ignore[arg-type]
    # Then it exits 2 and says how to set one
    assert_one_line_error(result, "AITBC_MINER_MINER__KEY")


def test_a_usage_error_exits_2(miner: MinerLauncher) -> None:
    # Given / When: an unknown flag
    result = run_cli(miner, "--no-such-flag")
    # Then: exit 2, a usage message, no traceback
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


# --- exit code 3: the coordinator refuses the key -------------------------------------


@pytest.mark.parametrize("dialect", ["2026-01", "2026-08"])
def test_a_refused_miner_key_exits_3_without_printing_the_key(
    start_devnet, miner: MinerLauncher, dialect: str
) -> None:
    # Given a coordinator that does not know our key
    devnet: DevnetProc = start_devnet(dialect)
    # When the headless miner starts with it
    proc = miner.start(devnet, MINER__KEY=SECRET)
    # Then it says the key was refused and exits 3
    proc.wait_for(event_is("auth_refused"))
    assert proc.wait_exit() == 3, proc.tail()
    assert SECRET not in proc.text()
    assert "Traceback" not in proc.text()


# --- the key is a secret ----------------------------------------------------------------


def test_the_miner_key_never_appears_in_headless_output_even_at_debug(
    start_devnet, miner: MinerLauncher
) -> None:
    # Given a 2026-01 coordinator (where the key is the miner's identity, so it is in
    # every receipt) and a miner logging at DEBUG
    devnet: DevnetProc = start_devnet("2026-01", miner_keys=(SECRET,))
    proc = miner.start(devnet, MINER__KEY=SECRET, LOG__LEVEL="DEBUG")
    proc.wait_for(event_is("registered"))
    # When it runs jobs (one fine, one malformed, one whose answer is lost) and stops
    devnet.inject(endpoint="result", kind="drop_after", times=1)
    jobs = [devnet.submit({"type": "echo", "data": "hello"}),
            devnet.submit({"type": "sleep", "seconds": "soon"}),
            devnet.submit({"type": "sha256", "data": "x"})]
    for job_id in jobs:
        proc.wait_for(event_is("outcome_delivered", job_id=job_id))
    proc.send(signal.SIGTERM)
    assert proc.wait_exit() == 0, proc.tail()
    # Then neither stdout nor stderr ever shows the key
    output = proc.text()
    assert "receipt_stored" in output and "delivery_problem" in output  # it did talk
    assert SECRET not in output


def test_config_check_redacts_the_miner_key(miner: MinerLauncher) -> None:
    # Given a key in the environment
    # When the operator checks the effective configuration
    result = run_cli(miner, "config", "check", MINER__KEY=SECRET)
    # Then it succeeds and shows the key as ***
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "key: '***'" in result.stdout


def test_config_check_accepts_the_shipped_example(miner: MinerLauncher) -> None:
    # Given the example file shipped in the repository
    example = REPO / "config.example.yaml"
    # When the operator checks it
    result = run_cli(miner, "--config", str(example), "config", "check")
    # Then it is valid and named as the source
    assert result.returncode == 0, result.stderr
    assert f"# config file: {example}" in result.stdout


# --- the headless path never loads the console ----------------------------------------

REPORT_MODULES_AT_EXIT = """
import atexit, json, runpy, sys
def report():
    ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "tui"))
    print(json.dumps({"event": "modules-at-exit", "ui": ui}), flush=True)
atexit.register(report)
sys.argv = ["aitbc-miner", "--headless"]
runpy.run_module("aitbc_miner", run_name="__main__", alter_sys=True)
"""


def test_the_headless_miner_never_imports_textual(start_devnet, miner: MinerLauncher) -> None:
    # Given the real entry point wrapped to report loaded modules at exit
    devnet: DevnetProc = start_devnet("2026-08")
    proc = miner.start(devnet, argv=[sys.executable, "-c", REPORT_MODULES_AT_EXIT])
    # When it registers, runs a job and is stopped
    proc.wait_for(event_is("registered"))
    job_id = devnet.submit({"type": "echo", "data": "hi"})
    proc.wait_for(event_is("outcome_delivered", job_id=job_id))
    proc.send(signal.SIGTERM)
    assert proc.wait_exit() == 0, proc.tail()
    # Then neither Textual nor the console package was ever imported
    (report,) = proc.wait_for(lambda ln: ln.get("event") == "modules-at-exit")
    assert report["ui"] == []


IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import aitbc_miner
names = sorted(m.name for m in pkgutil.walk_packages(aitbc_miner.__path__, "aitbc_miner.")
               if not m.name.endswith(".__main__"))
for name in names:
    importlib.import_module(name)
ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "tui"))
print(json.dumps({"modules": names, "ui": ui}))
"""


def test_no_aitbc_miner_module_imports_textual(miner: MinerLauncher) -> None:
    # When every aitbc_miner module is imported in a fresh interpreter
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], env=miner.env(None),
                            cwd=miner.root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Then the walk saw the package's modules, and none of them pulled in Textual
    assert {"aitbc_miner.host.cli", "aitbc_miner.engine.engine", "aitbc_miner.devnet.app"} <= set(
        report["modules"])
    assert report["ui"] == []


# --- the demo -----------------------------------------------------------------------------


def test_the_headless_demo_delivers_twenty_outcomes_and_exits_0(miner: MinerLauncher) -> None:
    # When a newcomer runs the headless demo with an exit condition
    proc = miner.start(None, argv=[str(MINER_EXE), "demo", "--headless", "--exit-after", "20"])
    # Then it delivers at least 20 outcomes and exits 0 on its own
    proc.wait_for(event_is("outcome_delivered"), count=20, timeout=45)
    assert proc.wait_exit(timeout=30) == 0, proc.tail()
    assert "Traceback" not in proc.text()


# --- a real (non-editable) install ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_non_editable_install_gives_a_working_command(tmp_path: Path,
                                                        miner: MinerLauncher) -> None:
    # Given a copy of the source tree and a fresh venv that sees the test venv's
    # dependencies (a .pth path line; the editable install's finder is not loaded)
    import shutil
    import site

    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "tests", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz-test-deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    # When the project is installed with pip, not editable
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--no-deps", str(src)], capture_output=True, text=True,
                             timeout=240, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in miner.env(None).items() if k != "PYTHONPATH"}
    exe = venv / "bin" / "aitbc-miner"
    # Then the installed command works, from the installed copy
    version = subprocess.run([str(exe), "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("aitbc-miner "), version.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import aitbc_miner; print(aitbc_miner.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert where.stdout.strip().startswith(str(purelib)), where.stdout + where.stderr
    check = subprocess.run([str(exe), "config", "check"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert "coordinator_api_base" in check.stdout
    # ...and the console's stylesheets were packaged with it
    for sheet in (REPO / "tui").glob("*.tcss"):
        assert (purelib / "tui" / sheet.name).is_file(), sheet.name
