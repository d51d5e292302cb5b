"""The engine's public surface: the Engine, its tuning, snapshots (their receipts in a
``ReceiptWindow``) and events, and the journal's record of a job as ``Engine.job_record``
returns it."""

from ..journal import FINAL_STATES, JobRecord, JobState, Outcome
from .core import Tuning
from .engine import Engine
from .receipt_window import ReceiptWindow
from .slots import Slot, SlotPool
from .snapshot import (
    ConnectionView,
    Counters,
    Event,
    Link,
    LoopView,
    Mode,
    OutcomeView,
    RunningJob,
    SlotState,
    SlotView,
    Snapshot,
)

__all__ = [
    "FINAL_STATES", "ConnectionView", "Counters", "Engine", "Event", "JobRecord", "JobState",
    "Link", "LoopView", "Mode", "Outcome", "OutcomeView", "ReceiptWindow", "RunningJob", "Slot",
    "SlotPool", "SlotState", "SlotView", "Snapshot", "Tuning",
]
