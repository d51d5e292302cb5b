"""A first console over the live engine: status at a glance and the core keys.

The full console (GPU panel, tables, receipts, earnings, themes) is issue 5; this one
already follows its rules: it renders snapshots and acts only through engine commands.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static

from aitbc_miner import __version__
from aitbc_miner.engine import Engine, Snapshot


class SnapshotArrived(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived)


class StatusView(Static):
    """The rig's state as text: mode, link, slots, recent outcomes."""

    DEFAULT_CSS = """
    StatusView { height: 1fr; padding: 0 1; }
    """

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.update(render(message.snapshot))


def render(s: Snapshot, now: float | None = None) -> Text:
    now = time.time() if now is None else now
    c = s.connection
    beat = f"heartbeat {now - c.last_heartbeat_at:.0f}s ago" if c.last_heartbeat_at else "no heartbeat yet"
    text = Text()
    text.append(f"aitbc-miner {__version__} | {s.miner_id} @ {c.url} | ", style="bold")
    text.append(f"{c.link.value}", style="green" if c.link.value == "registered" else "red")
    text.append(f" · {beat} | {s.mode.value.upper()}\n", style="bold")
    if c.reason:
        text.append(f"  {c.reason}\n", style="yellow")
    text.append("\nSlots\n", style="bold underline")
    for slot in s.slots:
        text.append(f"  {slot.slot_id:<8} {slot.state.value:<9} {slot.job_id or ''}\n")
    counters = s.counters
    text.append(
        f"\npolling every {s.poll_interval_s:.2f}s · outbox {s.outbox} · completed "
        f"{counters.completed} · failed {counters.failed} · canceled {counters.canceled} · "
        f"receipts {counters.receipts} (flagged {counters.receipts_flagged})\n")
    text.append("\nRecent outcomes\n", style="bold underline")
    for outcome in s.recent[:10]:
        text.append(f"  {outcome.job_id[:12]:<12} {outcome.job_type:<10} {outcome.outcome:<10} "
                    f"{outcome.error_code or ''}\n")
    return text


class MinerConsole(App[None]):
    TITLE = "aitbc-miner"
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("d", "drain", "Drain"),
        Binding("D", "undrain", "Undrain"),
        Binding("q", "quit_console", "Quit"),
    ]

    def __init__(self, engine: Engine, theme: str | None = None) -> None:
        super().__init__()
        self.engine = engine
        self._remove_listener = None

    def compose(self) -> ComposeResult:
        yield StatusView(id="status")
        yield Footer()

    def on_mount(self) -> None:
        view = self.query_one(StatusView)
        view.update(render(self.engine.snapshot()))
        self._remove_listener = self.engine.add_listener(
            lambda snap: view.post_message(SnapshotArrived(snap)))

    def on_unmount(self) -> None:
        if self._remove_listener:
            self._remove_listener()

    def action_toggle_pause(self) -> None:
        if self.engine.snapshot().mode.value == "paused":
            self.engine.resume()
        else:
            self.engine.pause()

    def action_drain(self) -> None:
        self.engine.drain()

    def action_undrain(self) -> None:
        self.engine.undrain()

    def action_quit_console(self) -> None:
        """Quit without losing a result: running jobs finish (drain) before the engine stops."""
        self.engine.drain(exit_when_drained=True)
        self.exit()
