"""Registration capabilities from the real probe: ``gpus: [{name, memory_mb}]`` and ``cuda``.

Only devices that can take jobs are listed: GPUs, or each MIG instance of a GPU in MIG
mode (with the instance's own memory), never a lost one. ``cuda`` is the driver's CUDA
version ("12.4") and is left out when NVML cannot say; without a driver the list is
empty. Simulated devices add ``"simulated": true`` (and their names say SIMULATED).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .model import NA, GpuSample
from .nvml import DriverInfo, Nvml
from .telemetry import TelemetrySnapshot


def capabilities_from(info: DriverInfo, samples: Iterable[GpuSample]) -> dict[str, Any]:
    gpus = [{"name": s.name,
             "memory_mb": None if s.memory_total_mib is NA else s.memory_total_mib}
            for s in samples if s.schedulable and not s.lost]
    caps: dict[str, Any] = {"gpus": gpus}
    if isinstance(info.cuda_version, str):
        caps["cuda"] = info.cuda_version
    if info.simulated:
        caps["simulated"] = True
    return caps


def capabilities(snapshot: TelemetrySnapshot) -> dict[str, Any]:
    """The capability keys from the sampler's newest snapshot (no NVML call)."""
    info = DriverInfo(snapshot.state, snapshot.message, snapshot.driver_version,
                      snapshot.cuda_version, snapshot.simulated)
    return capabilities_from(info, (g.sample for g in snapshot.gpus))


def probe_capabilities(nvml: Nvml) -> dict[str, Any]:
    """Start NVML if needed and read every device once. Blocks: run it in a thread."""
    nvml.init()
    samples = nvml.read_all(time.time(), processes=False)
    return capabilities_from(nvml.info, samples)  # info again: reading may have failed
