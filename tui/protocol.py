"""What the console needs from an engine: the real ``Engine``, a remote one, or a fake.

The console reads snapshots and events and acts only through these commands: the same
API that headless signals and the control socket use. Nothing else is touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from aitbc_miner.engine import JobRecord
from aitbc_miner.engine.snapshot import Event, ReceiptView, Snapshot

Clock = Callable[[], float]
SnapshotListener = Callable[[Snapshot], None]


@runtime_checkable
class EngineLike(Protocol):
    def snapshot(self) -> Snapshot: ...

    def add_listener(self, listener: SnapshotListener) -> Callable[[], None]: ...

    def subscribe(self) -> AsyncIterator[Event]: ...

    async def job_record(self, job_id: str) -> JobRecord | None:
        """A job from the journal, finished or not: details stay readable after the end."""
        ...

    async def job_receipts(self, job_id: str) -> tuple[ReceiptView, ...]:
        """The receipts stored for a job, oldest first."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def drain(self, *, exit_when_drained: bool = False, grace_s: float | None = None) -> None: ...

    def undrain(self) -> None: ...

    def cancel(self, job_id: str, reason: str = "operator") -> bool: ...

    def cancel_all(self, reason: str = "operator") -> int: ...

    def stop(self, *, cancel_running: bool = False) -> None: ...
