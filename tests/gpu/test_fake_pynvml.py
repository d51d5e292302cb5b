"""The fake pynvml follows the real one: names, signatures, structs and error codes."""

from __future__ import annotations

import inspect

import pynvml as real
import pytest

from tests.fakes.fake_pynvml import FAKE_FUNCTIONS, FakeGpu, FakeNvml


@pytest.mark.parametrize("name", FAKE_FUNCTIONS)
def test_every_fake_function_exists_in_pynvml_with_the_same_parameters(name: str) -> None:
    fake = FakeNvml()
    assert hasattr(real, name), f"pynvml has no {name}"
    real_params = list(inspect.signature(getattr(real, name)).parameters.values())
    fake_params = list(inspect.signature(getattr(fake, name)).parameters.values())
    assert [(p.name, p.default) for p in fake_params] == [
        (p.name, p.default) for p in real_params]


def test_error_classes_are_the_real_ones_with_the_real_codes() -> None:
    fake = FakeNvml()
    for name in ("NVMLError_LibraryNotFound", "NVMLError_GpuIsLost", "NVMLError_NotSupported",
                 "NVMLError_Uninitialized", "NVMLError_DriverNotLoaded", "NVMLError_Unknown"):
        assert getattr(fake, name) is getattr(real, name)
    assert fake.NVML_ERROR_GPU_IS_LOST == 15 and fake.NVML_ERROR_LIBRARY_NOT_FOUND == 12
    err = fake.error("NVML_ERROR_GPU_IS_LOST")
    assert type(err) is real.NVMLError_GpuIsLost and err.value == real.NVML_ERROR_GPU_IS_LOST
    assert isinstance(err, real.NVMLError) and str(err) == "GPU is lost"


def test_structs_have_the_real_field_names() -> None:
    fake = FakeNvml([FakeGpu(memory_total_mib=1024, memory_used_mib=256, util_gpu=40,
                             util_mem=10, processes={77: 100, 78: None})])
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    mem = fake.nvmlDeviceGetMemoryInfo(h)
    assert isinstance(mem, real.c_nvmlMemory_t)
    assert (mem.total, mem.used, mem.free) == (1024 << 20, 256 << 20, 768 << 20)
    util = fake.nvmlDeviceGetUtilizationRates(h)
    assert isinstance(util, real.c_nvmlUtilization_t) and (util.gpu, util.memory) == (40, 10)
    procs = fake.nvmlDeviceGetComputeRunningProcesses(h)
    assert isinstance(procs[0], real.nvmlFriendlyObject)
    assert [(p.pid, p.usedGpuMemory) for p in procs] == [(77, 100 << 20), (78, None)]


def test_calls_before_init_and_without_a_driver_fail_like_the_real_module() -> None:
    fake = FakeNvml.with_gpus(1)
    with pytest.raises(real.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    gone = FakeNvml.no_driver()
    with pytest.raises(real.NVMLError_LibraryNotFound):
        gone.nvmlInit()
    with pytest.raises(real.NVMLError_Uninitialized):
        gone.nvmlDeviceGetCount()


def test_the_real_module_without_a_driver_raises_what_the_fake_raises() -> None:
    # This machine has no NVIDIA driver: the real pynvml says LibraryNotFound, as the fake.
    try:
        real.nvmlInit()
    except real.NVMLError as exc:
        assert type(exc) in (real.NVMLError_LibraryNotFound, real.NVMLError_DriverNotLoaded)
    else:  # a machine with a driver: nothing to compare
        real.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")


def test_a_gpu_can_be_lost_after_a_number_of_calls_and_mig_instances_follow_their_gpu() -> None:
    gpu = FakeGpu.a100_mig(instances=2, lose_after=4)
    fake = FakeNvml([gpu])
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetMigMode(h) == [1, 1]
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(h, 1)
    assert fake.nvmlDeviceGetUUID(mig).startswith("MIG-")
    with pytest.raises(real.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(h, 5)
    with pytest.raises(real.NVMLError_NotSupported):
        fake.nvmlDeviceGetUtilizationRates(mig)
    fake.nvmlDeviceGetName(h)  # the fourth call on the GPU answers; the fifth does not
    with pytest.raises(real.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetName(h)
    with pytest.raises(real.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetMemoryInfo(mig)
