"""Prometheus metrics, read from the engine's snapshot at scrape time.

A collector, not counters sprinkled through the engine: every figure comes from the same
immutable ``Snapshot`` the console shows, so the two can never disagree, and an idle
miner does no metrics work between scrapes. Served on ``metrics.listen`` (off by
default; bind it to loopback or a private interface: it has no authentication).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .. import __version__
from ..engine import Engine, Snapshot


class SnapshotCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[object]:
        snap = self.engine.snapshot()
        yield InfoMetricFamily("aitbc_miner_build", "Version of the running miner",
                               value={"version": __version__, "miner_id": snap.miner_id})
        yield from _work(snap)
        yield from _money(snap)
        yield from _gpus(snap)


def _gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _work(snap: Snapshot) -> Iterator[object]:
    states = Counter(j.state for j in snap.jobs)
    yield _gauge("aitbc_miner_jobs", "Jobs the miner holds now, by state", ["state"],
                 [([s], float(states.get(s, 0))) for s in ("queued", "running", "canceling")])
    slots = Counter((s.kind, s.state.value) for s in snap.slots)
    yield _gauge("aitbc_miner_slots", "Slots by kind and state", ["kind", "state"],
                 [([k, st], float(n)) for (k, st), n in sorted(slots.items())])
    c = snap.counters
    totals = CounterMetricFamily("aitbc_miner_jobs_finished", "Jobs finished, by outcome",
                                 labels=["outcome"])
    for outcome, n in (("completed", c.completed), ("failed", c.failed),
                       ("canceled", c.canceled), ("interrupted", c.interrupted)):
        totals.add_metric([outcome], n)
    yield totals
    yield _gauge("aitbc_miner_outbox", "Outcomes waiting to be delivered", [],
                 [([], float(snap.outbox))])
    mode = GaugeMetricFamily("aitbc_miner_mode", "1 for the mode the miner is in",
                             labels=["mode"])
    mode.add_metric([snap.mode.value], 1.0)
    yield mode
    link = GaugeMetricFamily("aitbc_miner_link", "1 for the state of the coordinator link",
                             labels=["link"])
    link.add_metric([snap.connection.link.value], 1.0)
    yield link
    beat = snap.connection.last_heartbeat_at
    if beat is not None:
        yield _gauge("aitbc_miner_heartbeat_age_seconds",
                     "Seconds since the coordinator last answered a heartbeat", [],
                     [([], max(0.0, time.time() - beat))])


def _money(snap: Snapshot) -> Iterator[object]:
    c, e = snap.counters, snap.earnings
    receipts = CounterMetricFamily("aitbc_miner_receipts", "Receipts stored, by state",
                                   labels=["state"])
    receipts.add_metric(["counted"], c.receipts - c.receipts_flagged)
    receipts.add_metric(["flagged"], c.receipts_flagged)
    yield receipts
    yield _gauge("aitbc_miner_earnings", f"Earnings in {e.currency} by ledger state",
                 ["state"], [(["issued"], e.issued.amount), (["verified"], e.verified.amount),
                             (["paid"], e.paid.amount), (["flagged"], e.flagged.amount)])


def _gpus(snap: Snapshot) -> Iterator[object]:
    labels = ["index", "uuid", "name"]
    figures = {
        "aitbc_miner_gpu_utilization_percent": ("GPU utilization", "util_gpu_pct"),
        "aitbc_miner_gpu_memory_used_bytes": ("VRAM in use", "memory_used_mb"),
        "aitbc_miner_gpu_memory_total_bytes": ("VRAM size", "memory_total_mb"),
        "aitbc_miner_gpu_temperature_celsius": ("GPU temperature", "temperature_c"),
        "aitbc_miner_gpu_power_watts": ("Power draw", "power_w"),
    }
    for name, (doc, attr) in figures.items():
        rows = []
        for gpu in snap.gpu.gpus:
            value = getattr(gpu, attr)
            if value is None:  # N/A on this device: no sample rather than a fake 0
                continue
            scale = 1024 * 1024 if name.endswith("_bytes") else 1
            rows.append(([str(gpu.index), gpu.uuid, gpu.name], float(value) * scale))
        yield _gauge(name, doc, labels, rows)
    yield _gauge("aitbc_miner_gpu_lost", "1 when the GPU fell off the bus", labels,
                 [([str(g.index), g.uuid, g.name], float(g.state == "lost"))
                  for g in snap.gpu.gpus])


class MetricsServer:
    """``GET /metrics`` on a TCP address (aiohttp, in the engine's loop)."""

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(engine))
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]  # the real port when 0 was asked

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
