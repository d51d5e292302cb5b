"""Messages from the engine side to the widgets that own the views."""

from __future__ import annotations

from textual.message import Message

from aitbc_miner.engine.snapshot import Snapshot


class SnapshotArrived(Message):
    """The newest engine snapshot; a queued backlog collapses into the newest one."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived)


class EngineClosed(Message):
    """The engine's event stream ended: the engine has stopped."""
