"""The console's panels, each named for what it shows and owning its CSS."""

from .dashboard import Dashboard
from .earnings import EarningsPanel
from .events import EventLog, EventsPanel, LogFilter
from .gpu import GpuPanel
from .header import StatusHeader
from .jobs import JobsTable
from .keybar import KeyBar
from .receipts import ReceiptsTable
from .slots import SlotsPanel

__all__ = ["Dashboard", "EarningsPanel", "EventLog", "EventsPanel", "GpuPanel", "JobsTable",
           "KeyBar", "LogFilter", "ReceiptsTable", "SlotsPanel", "StatusHeader"]
