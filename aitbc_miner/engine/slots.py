"""Slots: the places jobs run (``cpu:<n>``, ``gpu:<n>``), and admission to them.

A job waits for a free slot of its runner's kind. A slot that is lost (its GPU fell
off the bus) takes no work and no longer counts towards the concurrency we register.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..runners.base import SlotKind
from .snapshot import SlotState, SlotView


@dataclass(slots=True)
class Slot:
    slot_id: str
    kind: SlotKind
    gpu_uuid: str | None = None
    job_id: str | None = None
    lost: bool = False

    @property
    def free(self) -> bool:
        return self.job_id is None and not self.lost


class NoSlotOfKind(Exception):
    """This miner has no (working) slot of the kind a job needs."""


class SlotPool:
    def __init__(self, slots: list[Slot]) -> None:
        self._slots = slots
        # Replaced on every change; setting the old one wakes all current waiters.
        self._freed = asyncio.Event()

    @classmethod
    def from_counts(cls, cpu: int, gpu: int) -> SlotPool:
        slots = [Slot(f"cpu:{i}", SlotKind.CPU) for i in range(cpu)]
        slots += [Slot(f"gpu:{i}", SlotKind.GPU) for i in range(gpu)]
        return cls(slots)

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(self._slots)

    def usable(self) -> int:
        """Slots that can take work: what we register as ``concurrency``."""
        return sum(1 for s in self._slots if not s.lost)

    def busy(self) -> int:
        return sum(1 for s in self._slots if s.job_id is not None)

    async def acquire(self, kind: SlotKind, job_id: str) -> Slot:
        """Wait for a free slot of ``kind`` and give it to ``job_id``."""
        while True:
            if not any(s.kind is kind and not s.lost for s in self._slots):
                raise NoSlotOfKind(f"this miner has no working {kind.value} slot")
            slot = next((s for s in self._slots if s.kind is kind and s.free), None)
            if slot is not None:
                slot.job_id = job_id
                return slot
            await self._freed.wait()

    def release(self, slot: Slot) -> None:
        slot.job_id = None
        self._wake()

    def mark_lost(self, slot_id: str, lost: bool = True) -> None:
        for slot in self._slots:
            if slot.slot_id == slot_id:
                slot.lost = lost
        self._wake()

    def _wake(self) -> None:
        self._freed.set()
        self._freed = asyncio.Event()

    def views(self, *, claiming: bool, draining: bool) -> tuple[SlotView, ...]:
        def state(slot: Slot) -> SlotState:
            if slot.lost:
                return SlotState.LOST
            if slot.job_id is not None:
                return SlotState.DRAINING if draining else SlotState.RUNNING
            return SlotState.IDLE if claiming else SlotState.PAUSED

        return tuple(
            SlotView(s.slot_id, s.kind.value, state(s), s.job_id) for s in self._slots
        )
