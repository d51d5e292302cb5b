"""Slots: the places jobs run (``cpu:<n>``, ``gpu:<n>``), and admission to them.

A job waits for a free slot of its runner's kind. A slot that is lost (its GPU fell
off the bus) takes no work and no longer counts towards the concurrency we register.
The number of CPU slots can change while the miner runs (a config reload): a slot taken
away while busy is retired, takes no more work, and goes once its job is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..gpu import GpuSlotSpec, fits
from ..runners.base import SlotKind
from .snapshot import SlotState, SlotView


@dataclass(slots=True)
class Slot:
    slot_id: str
    kind: SlotKind
    gpu_uuid: str | None = None
    job_id: str | None = None
    lost: bool = False
    gpu: GpuSlotSpec | None = None  # name and memory, for admission by constraints
    retired: bool = False  # removed by a reload while busy: goes when its job is done

    @property
    def free(self) -> bool:
        return self.job_id is None and not self.lost and not self.retired


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

    @classmethod
    def from_specs(cls, cpu: int, gpus: Iterable[GpuSlotSpec]) -> SlotPool:
        """CPU slots plus one slot per GPU spec (``gpu.gpu_slot_specs`` of the probe)."""
        slots = [Slot(f"cpu:{i}", SlotKind.CPU) for i in range(cpu)]
        slots += [Slot(g.slot_id, SlotKind.GPU, gpu_uuid=g.gpu_uuid, lost=g.lost, gpu=g)
                  for g in gpus]
        return cls(slots)

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(self._slots)

    def usable(self) -> int:
        """Slots that can take work: what we register as ``concurrency``."""
        return sum(1 for s in self._slots if not s.lost and not s.retired)

    def set_cpu(self, count: int) -> None:
        """Have ``count`` CPU slots: new ones are free at once; of those taken away, idle
        ones go now and busy ones are retired (they finish their job, then go)."""
        cpu = [s for s in self._slots if s.kind is SlotKind.CPU and not s.retired]
        for slot in cpu[count:]:
            if slot.job_id is None:
                self._slots.remove(slot)
            else:
                slot.retired = True
        taken = {s.slot_id for s in self._slots}
        ids = (f"cpu:{i}" for i in range(len(self._slots) + count) if f"cpu:{i}" not in taken)
        new = [Slot(next(ids), SlotKind.CPU) for _ in range(count - len(cpu))]
        at = max((i + 1 for i, s in enumerate(self._slots) if s.kind is SlotKind.CPU), default=0)
        self._slots[at:at] = new
        self._wake()

    async def acquire(self, kind: SlotKind, job_id: str,
                      constraints: Mapping[str, Any] | None = None) -> Slot:
        """Wait for a free slot of ``kind`` that the job's ``constraints`` admit
        (``min_vram_gb``, ``gpu``) and give it to ``job_id``."""
        while True:
            working = [s for s in self._slots if s.kind is kind and not s.lost
                       and not s.retired]
            if not working:
                raise NoSlotOfKind(f"this miner has no working {kind.value} slot")
            if constraints and kind is SlotKind.GPU:
                verdicts = [(s, fits(constraints, s.gpu)) for s in working if s.gpu is not None]
                refused = [why for _, (ok, why) in verdicts if not ok]
                working = [s for s, (ok, _) in verdicts if ok] + [
                    s for s in working if s.gpu is None]
                if not working:
                    raise NoSlotOfKind("no GPU here meets the job's constraints: "
                                       + "; ".join(refused))
            slot = next((s for s in working if s.free), None)
            if slot is not None:
                slot.job_id = job_id
                return slot
            await self._freed.wait()

    def release(self, slot: Slot) -> None:
        slot.job_id = None
        if slot.retired and slot in self._slots:
            self._slots.remove(slot)
        self._wake()

    def mark_gpu_lost(self, gpu_uuid: str) -> list[str]:
        """Mark every slot on this GPU lost; the jobs running there (to fail them)."""
        jobs = []
        for slot in self._slots:
            if slot.gpu_uuid == gpu_uuid:
                slot.lost = True
                if slot.job_id is not None:
                    jobs.append(slot.job_id)
        self._wake()
        return jobs

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
