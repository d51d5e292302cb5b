"""The NVML choke point: lazy start once, errors sorted into N/A, lost and no-driver."""

from __future__ import annotations

import threading

import pynvml as real
import pytest

from aitbc_miner.gpu import (
    ERROR_KINDS,
    NA,
    DriverState,
    ErrorKind,
    GpuState,
    Nvml,
)
from aitbc_miner.gpu.nvml import cuda_version_string
from tests.fakes.fake_pynvml import FakeGpu, FakeNvml

from .conftest import Install

READINGS = ("memory_total_mib", "memory_used_mib", "memory_free_mib", "util_gpu_pct",
            "util_mem_pct", "temperature_c", "power_w", "power_limit_w")


def test_every_nvml_error_code_of_the_installed_pynvml_has_a_kind() -> None:
    codes = {n for n in dir(real) if n.startswith("NVML_ERROR_")}
    assert codes - set(ERROR_KINDS) == set(), "add a row to ERROR_KINDS"
    assert ERROR_KINDS["NVML_ERROR_NOT_SUPPORTED"] is ErrorKind.FIELD
    assert ERROR_KINDS["NVML_ERROR_GPU_IS_LOST"] is ErrorKind.LOST
    assert ERROR_KINDS["NVML_ERROR_UNKNOWN"] is ErrorKind.LOST
    assert ERROR_KINDS["NVML_ERROR_LIBRARY_NOT_FOUND"] is ErrorKind.DRIVER
    assert ERROR_KINDS["NVML_ERROR_DRIVER_NOT_LOADED"] is ErrorKind.DRIVER


@pytest.mark.parametrize("count", [0, 1, 4])
def test_devices_are_enumerated_once_with_index_uuid_and_name(fake_nvml: Install,
                                                              count: int) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(count, name="NVIDIA L4", memory_total_mib=23034))
    nvml = Nvml()
    info = nvml.init()
    assert info.state is (DriverState.OK if count else DriverState.NO_DEVICES)
    assert info.message == ("NVIDIA driver ready" if count else "no visible devices")
    assert (info.driver_version, info.cuda_version) == ("550.54.15", "12.4")
    assert [d.index for d in nvml.devices] == [str(i) for i in range(count)]
    assert [d.uuid for d in nvml.devices] == [g.uuid for g in fake.gpus]
    assert {d.name for d in nvml.devices} <= {"NVIDIA L4"}
    samples = nvml.read_all(at=1.0)
    assert len(samples) == count
    assert all(s.memory_total_mib == 23034 and s.state is GpuState.OK for s in samples)
    nvml.init()
    assert fake.calls["nvmlInit"] == 1 and fake.calls["nvmlDeviceGetCount"] == 1


def test_nvml_starts_once_when_many_threads_ask_at_the_same_time(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(2))
    nvml = Nvml()
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        nvml.init()

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.calls["nvmlInit"] == 1 and len(nvml.devices) == 2


def test_nothing_is_imported_or_started_before_the_first_use(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(1))
    nvml = Nvml()
    assert nvml.info.state is DriverState.UNINITIALIZED and fake.calls["nvmlInit"] == 0


def test_one_gpu_reads_every_field_in_its_units(fake_nvml: Install) -> None:
    fake_nvml(FakeNvml([FakeGpu(memory_total_mib=16384, memory_used_mib=4000, util_gpu=73,
                                util_mem=21, temperature_c=64, power_mw=123_456,
                                power_limit_mw=250_000, processes={4242: 3000, 4243: None})]))
    nvml = Nvml()
    nvml.init()
    (s,) = nvml.read_all(at=5.0)
    assert (s.index, s.at, s.state, s.mig_parent) == ("0", 5.0, GpuState.OK, None)
    assert (s.memory_total_mib, s.memory_used_mib, s.memory_free_mib) == (16384, 4000, 12384)
    assert (s.util_gpu_pct, s.util_mem_pct, s.temperature_c) == (73, 21, 64)
    assert (s.power_w, s.power_limit_w) == (123.5, 250.0)
    assert dict(s.processes) == {4242: 3000, 4243: NA}
    assert s.as_dict()["processes"] == {"4242": 3000, "4243": None}


def test_each_unsupported_field_becomes_na_and_the_rest_still_read(fake_nvml: Install) -> None:
    fake_nvml(FakeNvml([FakeGpu(util_gpu=50, unsupported={
        "nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetComputeRunningProcesses"})]))
    nvml = Nvml()
    nvml.init()
    (s,) = nvml.read_all(at=1.0)
    assert s.state is GpuState.OK and s.util_gpu_pct == 50 and s.memory_total_mib == 81920
    assert (s.temperature_c, s.power_w, s.power_limit_w) == (NA, NA, NA)
    assert dict(s.processes) == {}
    assert str(s.temperature_c) == "N/A" and not s.temperature_c


def test_a_function_missing_from_an_old_pynvml_reads_as_na(fake_nvml: Install,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(1))
    monkeypatch.delattr(FakeNvml, "nvmlDeviceGetEnforcedPowerLimit")
    nvml = Nvml()
    nvml.init()
    (s,) = nvml.read_all(at=1.0)
    assert s.power_limit_w is NA and s.power_w == 60.0 and fake.calls["nvmlInit"] == 1


@pytest.mark.parametrize("error, hint", [
    ("NVML_ERROR_LIBRARY_NOT_FOUND", "libnvidia-ml.so.1 is not installed"),
    ("NVML_ERROR_DRIVER_NOT_LOADED", "kernel driver is not loaded"),
    ("NVML_ERROR_LIB_RM_VERSION_MISMATCH", "reboot after a driver upgrade"),
])
def test_no_driver_is_a_plain_state_not_an_exception(fake_nvml: Install, error: str,
                                                     hint: str) -> None:
    fake = fake_nvml(FakeNvml.no_driver(error))
    nvml = Nvml()
    info = nvml.init()
    assert info.state is DriverState.NO_DRIVER
    assert info.message.startswith("no NVIDIA driver found") and hint in info.message
    assert hint in info.detail and not info.detail.startswith("no NVIDIA")
    assert nvml.devices == () and nvml.read_all(at=1.0) == ()
    nvml.init()
    assert fake.calls["nvmlInit"] == 1  # not retried on every sample


def test_the_real_pynvml_on_this_machine_gives_the_no_driver_state() -> None:
    try:
        real.nvmlInit()
    except real.NVMLError:
        pass
    else:
        real.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    info = Nvml(real).init()
    assert info.state is DriverState.NO_DRIVER and info.message.startswith("no NVIDIA driver")


def test_mig_instances_are_their_own_devices_with_their_own_memory(fake_nvml: Install) -> None:
    mig = FakeGpu.a100_mig(instances=3)
    mig.mig[1] = None  # type: ignore[index]  # an empty MIG position is skipped
    fake_nvml(FakeNvml([FakeGpu(name="NVIDIA L4"), mig]))
    nvml = Nvml()
    nvml.init()
    refs = {d.index: d for d in nvml.devices}
    assert list(refs) == ["0", "1", "1:0", "1:2"]
    assert refs["1"].mig_enabled and not refs["1"].schedulable
    assert refs["1"].children == ("1:0", "1:2")
    assert refs["1:0"].mig_parent == "1" and refs["1:0"].uuid.startswith("MIG-")
    assert refs["0"].schedulable and not refs["0"].mig_enabled  # MigMode: NotSupported
    samples = {s.index: s for s in nvml.read_all(at=1.0)}
    inst = samples["1:2"]
    assert inst.memory_total_mib == 9856 and inst.util_gpu_pct is NA and inst.power_w is NA
    assert samples["1"].temperature_c == 35  # the card's sensors are read on the card


def test_a_lost_gpu_is_marked_lost_and_never_asked_again(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(3))
    nvml = Nvml()
    nvml.init()
    fake.gpus[1].lose()
    samples = nvml.read_all(at=2.0)
    assert [s.state for s in samples] == [GpuState.OK, GpuState.LOST, GpuState.OK]
    lost = samples[1]
    assert lost.uuid == fake.gpus[1].uuid and "GPU is lost" in (lost.reason or "")
    assert all(getattr(lost, f) is NA for f in READINGS)
    before = sum(fake.calls.values())
    fake.gpus[1].lost = False  # even if it answered again, we do not ask it
    again = nvml.read_all(at=3.0)
    assert again[1].state is GpuState.LOST
    assert sum(fake.calls.values()) - before == 2 * 8  # eight reads for each healthy GPU


@pytest.mark.parametrize("error", ["NVML_ERROR_UNKNOWN", "NVML_ERROR_GPU_IS_LOST"])
def test_a_gpu_lost_in_the_middle_of_a_sample_drops_its_partial_reading(
        fake_nvml: Install, error: str) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(2))
    nvml = Nvml()
    nvml.init()
    fake.gpus[0].lost_error = error
    fake.gpus[0].lose_after = fake.gpus[0].calls + 2  # memory and utilization answer
    a, b = nvml.read_all(at=1.0)
    assert a.state is GpuState.LOST and a.memory_total_mib is NA
    assert b.state is GpuState.OK and b.memory_total_mib == 81920


def test_a_gpu_lost_before_start_is_listed_as_lost(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(2))
    fake.gpus[0].lose()
    nvml = Nvml()
    assert nvml.init().state is DriverState.OK
    a, b = nvml.read_all(at=1.0)
    assert a.state is GpuState.LOST and b.state is GpuState.OK


def test_losing_a_mig_gpu_loses_its_instances(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml([FakeGpu.a100_mig(instances=2)]))
    nvml = Nvml()
    nvml.init()
    fake.gpus[0].lose()
    assert [s.state for s in nvml.read_all(at=1.0)] == [GpuState.LOST] * 3


def test_the_driver_going_away_mid_run_marks_every_gpu_lost(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(2))
    nvml = Nvml()
    nvml.init()
    fake.initialized = 0  # e.g. someone called nvmlShutdown: every call is Uninitialized
    samples = nvml.read_all(at=1.0)
    assert [s.state for s in samples] == [GpuState.LOST, GpuState.LOST]
    assert nvml.info.state is DriverState.FAILED
    assert nvml.info.message.startswith("the NVIDIA driver stopped answering")


def test_bytes_from_an_older_pynvml_are_decoded(fake_nvml: Install,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(1, name="Tesla T4"))
    monkeypatch.setattr(fake, "nvmlSystemGetDriverVersion", lambda: b"470.82.01")
    nvml = Nvml()
    assert nvml.init().driver_version == "470.82.01"


def test_cuda_versions_are_written_as_people_write_them() -> None:
    assert [cuda_version_string(v) for v in (12040, 11080, 12000, 12090, 13000)] == [
        "12.4", "11.8", "12.0", "12.9", "13.0"]


def test_shutdown_only_after_a_successful_start(fake_nvml: Install) -> None:
    fake = fake_nvml(FakeNvml.with_gpus(1))
    nvml = Nvml()
    nvml.close()
    assert fake.calls["nvmlShutdown"] == 0
    nvml.init()
    nvml.close()
    assert fake.calls["nvmlShutdown"] == 1 and fake.initialized == 0


def test_only_the_gpu_package_imports_pynvml() -> None:
    # The choke point: everything else reads telemetry snapshots, never NVML.
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    gpu_package = root / "aitbc_miner" / "gpu"
    imports = re.compile(r"^\s*(import|from)\s+pynvml\b", re.M)
    offenders = [str(p.relative_to(root))
                 for folder in (root / "aitbc_miner", root / "tui") if folder.is_dir()
                 for p in folder.rglob("*.py")
                 if gpu_package not in p.parents and imports.search(p.read_text("utf-8"))]
    assert offenders == []


def test_the_public_surface_is_pinned() -> None:
    import aitbc_miner.gpu as gpu

    assert sorted(gpu.__all__) == sorted([
        "ERROR_KINDS", "NA", "DeviceLost", "DeviceRef", "DriverGone", "DriverInfo",
        "DriverState", "ErrorKind", "GpuSample", "GpuSlotSpec", "GpuState", "GpuView",
        "JobGpuStats", "NaType", "Nvml", "Sampler", "TelemetrySnapshot", "capabilities",
        "capabilities_from", "cuda_env", "fits", "gpu_slot_specs", "is_na", "or_none",
        "probe_capabilities", "simulated_nvml", "slot_ids_on"])
    assert all(hasattr(gpu, name) for name in gpu.__all__)
