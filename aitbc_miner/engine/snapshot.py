"""What the engine shows the world: immutable snapshots and typed events.

This module and the engine's command methods are the whole surface the console and any
remote viewer use. Everything here is frozen; a viewer can keep a snapshot as long as
it likes while the engine moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from ..gpu.history import GpuHistory as GpuHistory  # the GPU types, re-exported for viewers
from ..gpu.history import Series as Series
from ..gpu.history import empty_history
from ..gpu.processes import GpuProcess as GpuProcess
from ..gpu.processes import ProcessRole as ProcessRole
from ..money import Earnings as Earnings  # the money types, re-exported for viewers
from ..money import Money as Money
from ..money import Profitability as Profitability
from ..money import ProfitLine as ProfitLine
from ..money import amount_of
from ..money import format_amount as format_amount


class Mode(StrEnum):
    """What the operator asked for, as the header shows it."""

    STARTING = "starting"
    RUNNING = "running"  # claiming work
    PAUSED = "paused"  # not claiming; running jobs go on
    DRAINING = "draining"  # not claiming; will idle (or exit) once running jobs finish
    DRAINED = "drained"  # draining and nothing left running
    STOPPING = "stopping"
    STOPPED = "stopped"


class Link(StrEnum):
    """The state of the miner's session with the coordinator."""

    CONNECTING = "connecting"
    REGISTERED = "registered"
    BACKING_OFF = "backing_off"
    AUTH_REFUSED = "auth_refused"
    OFFLINE = "offline"  # we said goodbye (shutdown)


class SlotState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    DRAINING = "draining"  # running, and no new job will follow
    PAUSED = "paused"  # idle, and no claim will start
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class SlotView:
    slot_id: str  # "cpu:0", "gpu:<uuid>"
    kind: str
    state: SlotState
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunningJob:
    job_id: str
    job_type: str
    slot_id: str | None  # None while waiting for a slot of its kind
    claimed_at: float
    started_at: float | None
    state: str  # "queued", "running", "canceling"
    progress: tuple[tuple[str, Any], ...] = ()
    model: str | None = None
    payload: tuple[tuple[str, str], ...] = ()  # for display: secrets masked, long values cut


@dataclass(frozen=True, slots=True)
class LoopView:
    name: str  # "session", "poll", "outbox"
    activity: str  # "polling every 0.5s", "backing off 2.1s after 503"
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionView:
    link: Link
    url: str
    last_heartbeat_at: float | None = None
    backoff_until: float | None = None
    reason: str | None = None  # why backing off / refused
    lookup_supported: bool | None = None  # can we ask the coordinator about a job (2026-08)?
    concurrency: int = 0


@dataclass(frozen=True, slots=True)
class Counters:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    interrupted: int = 0
    delivered: int = 0
    rejected: int = 0
    uncertain: int = 0
    receipts: int = 0
    receipts_flagged: int = 0  # invalid, mismatched or duplicate: not counted
    handed_off: int = 0  # given to the fleet's retry queue (another rig ran them)


@dataclass(frozen=True, slots=True)
class OutcomeView:
    job_id: str
    job_type: str
    outcome: str
    error_code: str | None
    at: float
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU (or MIG instance) as the console shows it; ``None`` fields read "N/A".

    ``history``: bucket means over the last minutes (``aitbc_miner.gpu.history``: util %,
    VRAM MiB, temperature, power W; ``history.power_w`` is the power over time).
    ``energy_wh``: energy drawn since the miner started. ``processes``: every process on
    the device with its VRAM and role (``job``/``backend``/``miner``/``foreign``), largest
    first. ``hot``: at or above ``HOT_C`` (the console says GPU HOT). ``state`` "lost"
    with ``lost_reason``: the console says GPU LOST.
    """

    index: int
    uuid: str
    name: str
    state: str  # "ok", "lost"
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    util_history: tuple[float, ...] = ()  # oldest first, bounded (history.util_pct's means)
    slot_ids: tuple[str, ...] = ()
    simulated: bool = False
    mig_parent: int | None = None
    lost_reason: str | None = None
    history: GpuHistory = field(default_factory=empty_history)
    energy_wh: float = 0.0
    processes: tuple[GpuProcess, ...] = ()
    hot: bool = False

    @property
    def foreign(self) -> tuple[GpuProcess, ...]:
        """Processes that are neither the miner's nor its jobs' nor its backend's."""
        return tuple(p for p in self.processes if p.foreign)


HOT_C = 85.0  # a GPU at or above this temperature is HOT (most throttle a few degrees on)


@dataclass(frozen=True, slots=True)
class GpuStatus:
    """The GPU side as a whole: "ok", "no_driver" (CPU slots only), "no_devices"."""

    state: str = "no_devices"
    message: str = ""
    simulated: bool = False
    gpus: tuple[GpuView, ...] = ()
    warnings: tuple[str, ...] = ()  # e.g. someone else's process on a GPU the miner uses


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """This rig's place in a fleet (docs/fleet.md). ``state``: ``off`` (no fleet
    configured), ``joined`` (Redis answers, the lease is held) or ``unreachable`` (working
    alone on the journal until Redis returns)."""

    state: str = "off"
    fleet: str | None = None
    rig_id: str | None = None
    message: str | None = None
    since: float | None = None  # when the state began


FLEET_UNREACHABLE = "fleet: Redis unreachable"


@dataclass(frozen=True, slots=True)
class DiskView:
    """Free space on the data disk (job folders) against the operator's floor.

    ``low``: below the floor, so the miner claims nothing until space returns; ``reason``
    says so in words for the console and ``ctl status``."""

    path: str = ""
    free_mb: float | None = None  # None until measured
    floor_mb: float = 0.0  # 0: no floor
    low: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReceiptView:
    receipt_id: str
    job_id: str
    received_at: float
    units: float | None
    unit_type: str | None
    price: Decimal | None
    verdict: str  # receipts.Verdict value
    reason: str
    counted: bool
    duplicate: bool

    @classmethod
    def of(cls, record: Any) -> ReceiptView:
        """From a ``journal.ReceiptRecord``."""
        return cls(record.receipt_id, record.job_id, record.received_at, record.units,
                   record.unit_type, amount_of(record.price), record.verdict,
                   record.reason or "", record.counted, record.duplicate)


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    at: float
    version: str
    miner_id: str
    mode: Mode
    connection: ConnectionView
    loops: tuple[LoopView, ...]
    slots: tuple[SlotView, ...]
    jobs: tuple[RunningJob, ...]
    counters: Counters
    outbox: int
    recent: tuple[OutcomeView, ...]
    poll_interval_s: float
    polls_in_flight: int
    receipts: Sequence[ReceiptView] = ()  # newest first, bounded (a ReceiptWindow)
    earnings: Earnings = Earnings()
    gpu: GpuStatus = GpuStatus()
    disk: DiskView = DiskView()
    warnings: tuple[str, ...] = ()  # standing problems every screen shows (e.g. no sandbox)
    started_at: float | None = None  # when the agent started: uptime is the agent's
    fleet: FleetStatus = FleetStatus()

    @property
    def running(self) -> int:
        return sum(1 for j in self.jobs if j.slot_id is not None)

    def job(self, job_id: str) -> RunningJob | None:
        return next((j for j in self.jobs if j.job_id == job_id), None)


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened; ``name`` is the stable event name in logs."""

    name: ClassVar[str] = "event"
    level: ClassVar[str] = "INFO"
    #: One step of a job's life: its log line is DEBUG while it is routine (INFO), since
    #: ``outcome_delivered`` is each job's one INFO line (docs/observability.md).
    job_step: ClassVar[bool] = False
    at: float
    message: str = field(default="")

    def severity(self) -> str:
        return self.level

    def log_severity(self) -> str:
        """The level of the event's log line (``severity`` is what viewers show)."""
        level = self.severity()
        return "DEBUG" if self.job_step and level == "INFO" else level

    def fields(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("at")
        data.pop("message")
        return {k: v for k, v in data.items() if v is not None}


#: Job outcomes that are no failure: a completed job, and one the operator canceled.
GOOD_OUTCOMES = frozenset({"completed", "canceled"})
#: Failure codes that say the rig itself is broken (not the job): ERROR, not WARNING.
RIG_FAILURES = frozenset({"E_INTERNAL", "E_SANDBOX_UNAVAILABLE", "E_DISK"})


def outcome_severity(outcome: str | None, code: str | None) -> str:
    """A job's end: INFO when it completed or was canceled, WARNING when it failed (or was
    interrupted), ERROR when the rig is at fault (``RIG_FAILURES``)."""
    if outcome is None or outcome in GOOD_OUTCOMES:
        return "INFO"
    return "ERROR" if code in RIG_FAILURES else "WARNING"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered(Event):
    name: ClassVar[str] = "registered"
    concurrency: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkChanged(Event):
    name: ClassVar[str] = "link_changed"
    link: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackingOff(Event):
    name: ClassVar[str] = "backing_off"
    level: ClassVar[str] = "WARNING"
    loop: str
    delay_s: float
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRefusedEvent(Event):
    name: ClassVar[str] = "auth_refused"
    level: ClassVar[str] = "ERROR"
    endpoint: str
    status: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolProblem(Event):
    name: ClassVar[str] = "protocol_error"
    level: ClassVar[str] = "WARNING"
    endpoint: str
    status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChanged(Event):
    name: ClassVar[str] = "mode_changed"
    mode: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuLost(Event):
    name: ClassVar[str] = "gpu_lost"
    level: ClassVar[str] = "ERROR"
    gpu_index: str
    gpu_uuid: str
    jobs: tuple[str, ...] = ()  # failed with E_GPU_LOST


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskFloorCrossed(Event):
    """Free space on the data disk fell under the floor (``low``: claiming stops), or is
    back over it (claiming resumes)."""

    name: ClassVar[str] = "disk_floor"
    low: bool
    path: str
    free_mb: float
    floor_mb: float

    def severity(self) -> str:
        return "WARNING" if self.low else "INFO"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeUnstaged(Event):
    """The journal refused a job's outcome (its disk full, say): the job stays claimed or
    running there, and the next start reports it ``E_INTERRUPTED``."""

    name: ClassVar[str] = "outcome_unstaged"
    level: ClassVar[str] = "ERROR"
    job_id: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobClaimed(Event):
    name: ClassVar[str] = "job_claimed"
    job_step: ClassVar[bool] = True
    job_id: str
    job_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted(Event):
    name: ClassVar[str] = "job_started"
    job_step: ClassVar[bool] = True
    job_id: str
    slot: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobHandedOff(Event):
    """A job this rig could not finish for a local reason went to the fleet's retry
    queue instead of failing: another rig with a matching free slot runs it."""

    name: ClassVar[str] = "job_handed_off"
    job_id: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFinished(Event):
    name: ClassVar[str] = "job_finished"
    job_step: ClassVar[bool] = True
    job_id: str
    outcome: str
    code: str | None = None
    duration_s: float | None = None
    slot: str | None = None
    job_type: str | None = None

    def severity(self) -> str:
        return outcome_severity(self.outcome, self.code)

    def log_severity(self) -> str:
        """A step in the log: the job's one line at INFO and above is its delivery."""
        return "DEBUG"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobLogLine(Event):
    name: ClassVar[str] = "job_log"
    level: ClassVar[str] = "DEBUG"
    job_id: str
    line: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeDelivered(Event):
    """The end of a job's life at the miner, and its one INFO log line: what it was, how
    it ended, and the receipt it earned."""

    name: ClassVar[str] = "outcome_delivered"
    job_id: str
    endpoint: str
    attempts: int
    job_type: str | None = None
    outcome: str | None = None
    code: str | None = None
    duration_s: float | None = None
    slot: str | None = None
    receipt_id: str | None = None
    price: float | None = None

    def severity(self) -> str:
        return outcome_severity(self.outcome, self.code)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryProblem(Event):
    name: ClassVar[str] = "delivery_problem"
    level: ClassVar[str] = "WARNING"
    job_id: str
    endpoint: str
    attempt: int
    delay_s: float | None = None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptStored(Event):
    name: ClassVar[str] = "receipt_stored"
    job_step: ClassVar[bool] = True
    job_id: str
    receipt_id: str
    price: float | None
    verdict: str
    counted: bool
    duplicate: bool

    def severity(self) -> str:
        if not self.counted:
            return "ERROR"
        return "WARNING" if self.duplicate else "INFO"  # counted, but possibly billed twice
