"""Prometheus metrics at ``metrics.listen`` (``/metrics``), beside ``/healthz`` and ``/readyz``.

Two sources, one registry (docs/observability.md lists every metric):

- **State**, read from the engine's snapshot at scrape time, so the figures are the ones
  the console shows and an idle miner does no metrics work between scrapes: jobs, slots,
  mode, link, heartbeat age, receipts, earnings, GPUs.
- **Histories** the snapshot does not keep, fed by the engine's hooks as things happen:
  job durations and failures by code (its events), coordinator request durations and
  answers by status class (the coordinator client's observer). The engine knows nothing
  of Prometheus; only this module imports ``prometheus_client``.

Plus the client library's process, platform and GC collectors (``process_*``,
``python_*``). Served through prometheus_client's own encoders with content negotiation
(OpenMetrics when the scraper asks for it, else the text format), gzipped on request.
Off by default; it has no authentication, so bind it to loopback or a private network.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..codes import ErrorCode
from ..coordinator import Exchange
from ..engine import Engine, Event, Snapshot
from ..engine.snapshot import JobFinished
from .health import add_health_routes, readiness

#: Jobs last from milliseconds (built-ins) to an hour (``jobs.max_timeout_s``).
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Coordinator calls: loopback milliseconds up to the read timeout and beyond.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
log = logging.getLogger(__name__)

OTHER = "other"  # the label of a value outside the known set (bounded cardinality)
ERROR_CODES = frozenset(code.value for code in ErrorCode)


class SnapshotCollector(Collector):
    """State figures, read from one snapshot per scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.started_at = engine.core.clock()  # the heartbeat age's base until the first one
        self._earned: dict[str, float] = {}  # high-water marks: a counter never goes down

    def collect(self) -> Iterator[Metric]:
        snap = self.engine.snapshot()
        yield InfoMetricFamily("aitbc_miner_build", "Version of the running miner",
                               value={"version": __version__, "miner_id": snap.miner_id})
        yield from _work(snap)
        yield from self._session(snap)
        yield from self._money(snap)
        yield from _gpus(snap)

    def _session(self, snap: Snapshot) -> Iterator[Metric]:
        interval = self.engine.core.tuning.heartbeat_interval_s
        beat = snap.connection.last_heartbeat_at
        yield _gauge("aitbc_miner_heartbeat_age_seconds",
                     "Seconds since the coordinator last answered a heartbeat (since the "
                     "miner started, until the first one)", [],
                     [([], max(0.0, snap.at - (self.started_at if beat is None else beat)))])
        yield _gauge("aitbc_miner_heartbeat_interval_seconds",
                     "Configured seconds between heartbeats (heartbeat_interval_s)", [],
                     [([], interval)])
        ready, _ = readiness(self.engine)
        yield _gauge("aitbc_miner_ready", "1 while /readyz answers 200: registered, and a "
                     "heartbeat answered within two intervals", [], [([], float(ready))])

    def _money(self, snap: Snapshot) -> Iterator[Metric]:
        c, e = snap.counters, snap.earnings
        receipts = CounterMetricFamily("aitbc_miner_receipts", "Receipts stored, by state",
                                       labels=["state"])
        receipts.add_metric(["counted"], c.receipts - c.receipts_flagged)
        receipts.add_metric(["flagged"], c.receipts_flagged)
        yield receipts
        earned = CounterMetricFamily(
            "aitbc_miner_earnings_aitbc", "AITBC earned, by ledger state (journal totals)",
            labels=["state"])
        for state, money in (("issued", e.issued), ("verified", e.verified),
                             ("paid", e.paid), ("flagged", e.flagged)):
            value = max(self._earned.get(state, 0.0), float(money.amount))
            self._earned[state] = value
            earned.add_metric([state], value)
        yield earned


def _gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _work(snap: Snapshot) -> Iterator[Metric]:
    states = Tally(j.state for j in snap.jobs)
    yield _gauge("aitbc_miner_jobs", "Jobs the miner holds now, by state", ["state"],
                 [([s], float(states.get(s, 0))) for s in ("queued", "running", "canceling")])
    slots = Tally((s.kind, s.state.value) for s in snap.slots)
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
    d = snap.disk
    if d.free_mb is not None:  # measured once the engine starts
        yield _gauge("aitbc_miner_data_disk_free_bytes", "Free space on the data disk", [],
                     [([], d.free_mb * 1024 * 1024)])
    yield _gauge("aitbc_miner_data_disk_floor_bytes", "Below this much free space the miner "
                 "claims no work (workspace.min_free_mb; 0: no floor)", [],
                 [([], d.floor_mb * 1024 * 1024)])


def _gpus(snap: Snapshot) -> Iterator[Metric]:
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


class EventMetrics:
    """Histograms and counters fed by the engine's hooks as jobs end and calls return."""

    def __init__(self, engine: Engine, registry: CollectorRegistry) -> None:
        self.job_types = frozenset().union(*(r.job_types for r in engine.core.registry.runners))
        self.job_duration = Histogram(
            "aitbc_miner_job_duration_seconds", "Run time of finished jobs (start to outcome)",
            ["type", "outcome"], buckets=JOB_BUCKETS, registry=registry)
        self.job_failures = Counter(
            "aitbc_miner_job_failures", "Jobs that ended without a result, by error code",
            ["code"], registry=registry)
        for code in ErrorCode:  # every code from the start, so rates and alerts see 0
            self.job_failures.labels(code.value)
        self.request_duration = Histogram(
            "aitbc_miner_coordinator_request_duration_seconds",
            "Coordinator calls by endpoint and HTTP status (error: no answer)",
            ["endpoint", "status"], buckets=REQUEST_BUCKETS, registry=registry)
        self.requests = Counter(
            "aitbc_miner_coordinator_requests",
            "Coordinator calls by endpoint and status class (2xx..5xx; error: no answer)",
            ["endpoint", "status_class"], registry=registry)
        engine.add_event_listener(self.on_event)
        engine.observe_requests(self.on_exchange)

    def on_event(self, event: Event) -> None:
        if not isinstance(event, JobFinished):
            return
        if event.code is not None:
            code = event.code if event.code in ERROR_CODES else OTHER
            self.job_failures.labels(code).inc()
        if event.duration_s is not None:
            job_type = event.job_type if event.job_type in self.job_types else OTHER
            self.job_duration.labels(job_type, event.outcome).observe(event.duration_s)

    def on_exchange(self, exchange: Exchange) -> None:
        status = exchange.status
        if status is None:
            code, family = "error", "error"
        elif 100 <= status <= 599:
            code, family = str(status), f"{status // 100}xx"
        else:
            code, family = OTHER, OTHER
        self.request_duration.labels(exchange.endpoint, code).observe(exchange.seconds)
        self.requests.labels(exchange.endpoint, family).inc()


def metrics_registry(engine: Engine) -> CollectorRegistry:
    """Everything ``/metrics`` serves for ``engine``, hooks installed."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` twins
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(SnapshotCollector(engine))
    EventMetrics(engine, registry)
    return registry


class MetricsServer:
    """``GET /metrics``, ``/healthz`` and ``/readyz`` on a TCP address (aiohttp, in the
    engine's loop)."""

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self.engine = engine
        self.registry = metrics_registry(engine)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        add_health_routes(app, self.engine)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:  # the operator's address: say which setting it came from
            await self.stop()
            raise OSError(exc.errno, f"metrics.listen {self.host}:{self.port}: "
                          f"{exc.strerror or exc}") from None
        self.port = self._runner.addresses[0][1]  # the real port when 0 was asked
        log.info("serving metrics on http://%s:%d/metrics (and /healthz, /readyz)",
                 self.host, self.port, extra={"event_name": "metrics_listening",
                                              "address": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encode(self.registry),
                                headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response
