"""The engine's public surface: the Engine, its tuning, snapshots and events."""

from .core import Tuning
from .engine import Engine
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
    "ConnectionView", "Counters", "Engine", "Event", "Link", "LoopView", "Mode", "OutcomeView",
    "RunningJob", "Slot", "SlotPool", "SlotState", "SlotView", "Snapshot", "Tuning",
]
