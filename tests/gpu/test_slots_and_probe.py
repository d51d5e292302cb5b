"""GPU slot specs, admission by constraints, and the registration capabilities."""

from __future__ import annotations

from typing import Any

import pytest

from aitbc_miner.gpu import (
    NA,
    GpuSlotSpec,
    Nvml,
    Sampler,
    capabilities,
    cuda_env,
    fits,
    gpu_slot_specs,
    probe_capabilities,
    simulated_nvml,
    slot_ids_on,
)
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

from .conftest import Install

A100 = GpuSlotSpec("gpu:0", "0", "GPU-a", "NVIDIA A100-SXM4-80GB", 81920)
T4 = GpuSlotSpec("gpu:1", "1", "GPU-t", "Tesla T4", 15360)


@pytest.mark.parametrize("count", [0, 1, 4])
async def test_one_slot_per_gpu_with_uuid_name_and_memory(fake_nvml: Install,
                                                          count: int) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(count, name="NVIDIA L4", memory_total_mib=23034))
    snap = await Sampler(Nvml()).sample_once()
    specs = gpu_slot_specs(snap)
    assert [s.slot_id for s in specs] == [f"gpu:{i}" for i in range(count)]
    assert [s.gpu_uuid for s in specs] == [g.uuid for g in fake.gpus]
    assert all(s.gpu_name == "NVIDIA L4" and s.memory_mib == 23034 for s in specs)


async def test_slots_per_gpu_gives_several_slots_on_one_device(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(2))
    snap = await Sampler(Nvml()).sample_once()
    specs = gpu_slot_specs(snap, slots_per_gpu=2)
    assert [s.slot_id for s in specs] == ["gpu:0/0", "gpu:0/1", "gpu:1/0", "gpu:1/1"]
    assert slot_ids_on(specs, fake.gpus[1].uuid) == ("gpu:1/0", "gpu:1/1")
    with pytest.raises(ValueError):
        gpu_slot_specs(snap, slots_per_gpu=0)


async def test_mig_instances_get_slots_and_their_gpu_does_not(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml([FakeGpu.a100_mig(instances=2), FakeGpu(name="NVIDIA L4")]))
    snap = await Sampler(Nvml()).sample_once()
    specs = gpu_slot_specs(snap)
    assert [s.slot_id for s in specs] == ["gpu:0:0", "gpu:0:1", "gpu:1"]
    mig0 = fake.gpus[0].mig[0]  # type: ignore[index]
    assert specs[0].gpu_uuid == mig0.uuid and specs[0].memory_mib == 9856  # type: ignore[union-attr]
    assert specs[0].env == {"CUDA_VISIBLE_DEVICES": mig0.uuid}  # type: ignore[union-attr]


async def test_a_gpu_lost_before_start_gets_a_lost_slot(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(2))
    fake.gpus[1].lose()
    snap = await Sampler(Nvml()).sample_once()
    assert [(s.slot_id, s.lost) for s in gpu_slot_specs(snap)] == [("gpu:0", False),
                                                                  ("gpu:1", True)]


def test_a_gpu_job_sees_only_its_device() -> None:
    assert cuda_env("GPU-abc") == {"CUDA_VISIBLE_DEVICES": "GPU-abc"}
    assert T4.env == {"CUDA_VISIBLE_DEVICES": "GPU-t"}


@pytest.mark.parametrize("constraints, gpu, ok, reason", [
    (None, T4, True, "fits"),
    ({}, T4, True, "fits"),
    ({"gpu": None, "min_vram_gb": None, "models": ["x"]}, T4, True, "fits"),
    ({"gpu": "a100"}, A100, True, "fits"),
    ({"gpu": "A100-SXM4"}, A100, True, "fits"),
    ({"gpu": "A100"}, T4, False, "needs a GPU matching 'A100'; gpu:1 is 'Tesla T4'"),
    ({"gpu": 3}, T4, False, "constraint gpu=3 is not a GPU name"),
    ({"min_vram_gb": 80}, A100, True, "fits"),
    ({"min_vram_gb": 15}, T4, True, "fits"),
    ({"min_vram_gb": 16}, T4, False, "needs 16 GB of VRAM; gpu:1 (Tesla T4) has 15.0 GB"),
    ({"min_vram_gb": 0}, T4, True, "fits"),
    ({"min_vram_gb": True}, T4, False, "constraint min_vram_gb=True is not a size in GB"),
    ({"min_vram_gb": "16"}, T4, False, "constraint min_vram_gb='16' is not a size in GB"),
    ({"min_vram_gb": -1}, T4, False, "constraint min_vram_gb=-1 is not a size in GB"),
    ({"min_vram_gb": float("nan")}, T4, False, "constraint min_vram_gb=nan is not a size in GB"),
    ({"gpu": "t4", "min_vram_gb": 40}, T4, False,
     "needs 40 GB of VRAM; gpu:1 (Tesla T4) has 15.0 GB"),
    ({"min_vram_gb": 1}, GpuSlotSpec("gpu:2", "2", "GPU-x", "X", NA), False,
     "needs 1 GB of VRAM; the memory of gpu:2 (X) is unknown"),
])
def test_admission_by_gpu_name_and_min_vram(constraints: dict[str, Any] | None,
                                            gpu: GpuSlotSpec, ok: bool, reason: str) -> None:
    assert fits(constraints, gpu) == (ok, reason)


async def test_admission_against_a_simulated_gpu_still_matches_its_model_name() -> None:
    snap = await Sampler(simulated_nvml(1)).sample_once()
    (spec,) = gpu_slot_specs(snap)
    assert spec.simulated and fits({"gpu": "h100", "min_vram_gb": 79}, spec) == (True, "fits")


# --- capabilities -------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 4])
def test_capabilities_list_gpus_and_cuda_from_the_probe(fake_nvml: Install, count: int) -> None:
    fake_nvml(FakeNvml.with_gpus(count, name="NVIDIA H100 80GB HBM3", memory_total_mib=81559))
    caps = probe_capabilities(Nvml())
    assert caps == {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559}] * count,
                    "cuda": "12.4"}


def test_capabilities_without_a_driver_are_an_empty_list(fake_nvml: Install) -> None:
    fake_nvml(FakeNvml.no_driver())
    assert probe_capabilities(Nvml()) == {"gpus": []}


async def test_capabilities_list_mig_instances_and_leave_lost_gpus_out(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml([FakeGpu.a100_mig(instances=2), FakeGpu(name="Tesla T4",
                                                                      memory_total_mib=15360)],
                              cuda_version=11080))
    sampler = Sampler(Nvml())
    await sampler.sample_once()
    mig = {"name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "memory_mb": 9856}
    assert capabilities(sampler.snapshot) == {
        "gpus": [mig, mig, {"name": "Tesla T4", "memory_mb": 15360}], "cuda": "11.8"}
    fake.gpus[1].lose()
    await sampler.sample_once()
    assert capabilities(sampler.snapshot) == {"gpus": [mig, mig], "cuda": "11.8"}


def test_simulated_capabilities_say_so() -> None:
    caps = probe_capabilities(simulated_nvml(2))
    assert caps["simulated"] is True and caps["cuda"] == "12.4"
    assert [g["name"] for g in caps["gpus"]] == ["SIMULATED NVIDIA H100 80GB HBM3"] * 2
