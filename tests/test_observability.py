"""What ships in deploy/ for monitoring holds against a live miner: ``promtool check metrics``
passes on a real scrape, the alert rules pass ``promtool check rules``, and every metric
the Grafana dashboard and the rules query is one the miner serves once it has run jobs."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aitbc_miner.devnet import Devnet, Dialect
from aitbc_miner.engine.snapshot import GpuStatus, GpuView
from aitbc_miner.host.runtime import Host

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
RULES = ROOT / "deploy" / "prometheus-alerts.yml"
#: Series Prometheus records itself for every target; no exporter serves them.
SYNTHESIZED = frozenset({"up"})
PROMQL_WORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring",
                          "group_left", "group_right", "bool", "offset", "inf", "nan"})


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return tool


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label
    matchers, ranges, grouping clauses, variables, functions and keywords are gone."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', " ", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if not call and name not in PROMQL_WORDS:
            names.add(name)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label): the metric only
            exprs += re.findall(r"label_values\(\s*([\w:]+)", variable["definition"])
    return exprs


def rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_name_reader_finds_metrics_and_only_metrics() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, type) (rate(aitbc_miner_job_duration_seconds'
            '_bucket{instance=~"$instance", code!="E_X"}[$__rate_interval]))) / on (instance) '
            'group_left 2 * aitbc_miner_heartbeat_interval_seconds > bool 1e-9')
    assert metric_names(expr) == {"aitbc_miner_job_duration_seconds_bucket",
                                  "aitbc_miner_heartbeat_interval_seconds"}


@pytest.fixture
async def scrape(make_engine) -> AsyncIterator[str]:
    """A live scrape (text format, as promtool reads it) of a miner that ran jobs: good
    ones, failed ones, on a GPU, with a data-disk floor, against a real coordinator."""
    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        for payload in ({"type": "sha256", "data": "a"}, {"type": "echo", "data": "b"},
                        {"type": "sleep", "seconds": "soon"}, {"type": "teleport"}):
            await devnet.submit_job(payload)
        engine = make_engine(devnet.url, pinned_key=devnet.public_key_id, min_free_mb=1.0)
        engine.core.gpu = GpuStatus("ok", gpus=(GpuView(
            index=0, uuid="GPU-1", name="NVIDIA L4", state="ok", memory_used_mb=1024.0,
            memory_total_mb=23034.0, util_gpu_pct=87.0, temperature_c=61.0, power_w=70.0),))
        host = Host(engine, drain_grace_s=5.0, metrics_address=("127.0.0.1", 0))
        run = asyncio.create_task(host.run(signals=False))
        try:
            await engine.wait_until(lambda s: s.counters.delivered == 4 and s.counters.receipts
                                    == 2 and s.earnings.verified.jobs == 2, timeout=20)
            assert host.metrics is not None
            async with httpx.AsyncClient() as http:
                answer = await http.get(f"http://127.0.0.1:{host.metrics.port}/metrics")
        finally:
            engine.stop()
            async with asyncio.timeout(15):
                await run
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    yield answer.text


def test_promtool_accepts_a_live_scrape(scrape: str) -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=scrape, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_dashboard_and_the_rules_query_only_metrics_the_miner_serves(scrape: str) -> None:
    served = {s.name for family in text_string_to_metric_families(scrape)
              for s in family.samples}
    for source, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        used = set().union(*(metric_names(e) for e in exprs))
        assert len(used) >= 8, (source, used)  # the reader saw the queries
        missing = used - served - SYNTHESIZED
        assert not missing, f"{source} queries metrics the miner does not serve: {missing}"
