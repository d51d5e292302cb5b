"""Profitability to the cent: fixed readings at fixed (fake-clock) times, a known
electricity price and AITBC rate, and exact Decimal results per GPU and per model; last,
fake NVML power through the real GPU sampler and engine into the snapshot."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aitbc_miner.devnet import DEFAULT_MINER_KEYS, Devnet, Dialect
from aitbc_miner.energy import EnergyMeter, EnergyReading, Tariff, profitability
from aitbc_miner.engine import Engine, SlotPool, Tuning
from aitbc_miner.gpu import Nvml, Sampler, gpu_slot_specs
from aitbc_miner.ledger import Book, ReceiptRow
from aitbc_miner.money import ProfitLine
from aitbc_miner.runners import RunnerRegistry
from aitbc_miner.runners.builtin import BuiltinRunner
from tests.fakes.fake_pynvml import FakeNvml, install
from tests.gpu.test_engine_integration import HoldingGpuRunner

D = Decimal
T0 = 1_800_000_000.0  # a whole minute
TARIFF = Tariff(price_per_kwh=D("0.30"), currency="EUR", aitbc_rate=D("2.50"))


def half_hour_of_work() -> tuple[Book, EnergyMeter]:
    """30 minutes, a reading every 10 s (the sampler's running energy totals):

    * gpu:0 runs llama3.2 at 180 W for 20 minutes (60 Wh), then idles at 36 W (6 Wh);
    * gpu:1 runs llama3.2 and mistral side by side (two slots) at 360 W: 180 Wh, 90 each;
    * receipts: gpu:0 llama3.2 0.05, gpu:1 llama3.2 0.04 and mistral 0.02, a CPU job 0.01.
    """
    meter = EnergyMeter()
    total = {"gpu:0": D(0), "gpu:1": D(0)}
    for k in range(181):
        busy = k < 120  # the work on gpu:0 from this reading to the next
        meter.observe(T0 + 10 * k, [
            EnergyReading("gpu:0", total["gpu:0"], ("llama3.2",) if busy else ()),
            EnergyReading("gpu:1", total["gpu:1"], ("llama3.2", "mistral")),
        ])
        total["gpu:0"] += (D(180) if busy else D(36)) * 10 / 3600
        total["gpu:1"] += D(360) * 10 / 3600
    book = Book()
    for rid, at, price, model, gpu in (("a", 600, "0.05", "llama3.2", "gpu:0"),
                                       ("b", 900, "0.04", "llama3.2", "gpu:1"),
                                       ("c", 1200, "0.02", "mistral", "gpu:1"),
                                       ("d", 1500, "0.01", "sha256", "cpu")):
        book.add_receipt(ReceiptRow(rid, T0 + at, D(price), True, False, model, gpu, "x"))
    return book, meter


def test_profitability_per_gpu_and_per_model_to_the_cent() -> None:
    # Given half an hour of fixed power readings and receipts
    book, meter = half_hour_of_work()
    # When profitability is measured at the end of it (0.30 EUR/kWh, 1 AITBC = 2.50 EUR)
    p = profitability(book, meter, TARIFF, now=T0 + 1800)
    # Then the window is the 30 minutes with readings
    assert p.window_s == 1800 and p.metered and p.currency == "EUR"
    # And each GPU's energy is its work's (idle apart), cost = kWh x price, and
    # net per hour = (AITBC x rate - cost) / 0.5 h
    assert p.by_gpu == (
        ProfitLine("cpu", D("0.01"), D(0), D(0), D("0.05")),
        ProfitLine("gpu:0", D("0.05"), D(60), D("0.018"), D("0.214"), idle_wh=D(6)),
        ProfitLine("gpu:1", D("0.06"), D(180), D("0.054"), D("0.192")),
    )
    assert p.by_model == (
        ProfitLine("llama3.2", D("0.09"), D(150), D("0.045"), D("0.36")),
        ProfitLine("mistral", D("0.02"), D(90), D("0.027"), D("0.046")),
        ProfitLine("sha256", D("0.01"), D(0), D(0), D("0.05")),
    )
    # And idle is the rig's overhead; the rig's net counts it
    assert p.idle == ProfitLine("idle", D(0), D(6), D("0.0018"), D("-0.0036"))
    assert p.rig == ProfitLine("rig", D("0.12"), D(246), D("0.0738"), D("0.4524"),
                               idle_wh=D(6))
    assert sum((m.net_per_hour or D(0) for m in p.by_model), p.idle.net_per_hour or D(0)) \
        == p.rig.net_per_hour
    # And to the cent, as the screen shows it
    assert p.rig.net_per_hour.quantize(D("0.01")) == D("0.45")  # type: ignore[union-attr]


def test_without_a_rate_only_the_cost_is_shown() -> None:
    book, meter = half_hour_of_work()
    p = profitability(book, meter, Tariff(D("0.30"), "EUR"), now=T0 + 1800)
    assert p.rig.cost == D("0.0738") and p.rig.net_per_hour is None


def test_gaps_unknown_energy_and_a_restarted_sampler_count_nothing(tmp_path: Path) -> None:
    # Given readings 10 s apart, then a gap longer than the sampler integrates, then an
    # interval across a minute boundary; gpu:1 first unknown, then its total goes back
    meter = EnergyMeter()
    for at, e0, e1 in ((0, "0", None), (10, "1", "0"), (295, "2", "5"), (305, "3", "4")):
        meter.observe(T0 + at, [EnergyReading("gpu:0", D(e0)),
                                EnergyReading("gpu:1", None if e1 is None else D(e1))])
    # Then gpu:0 drew 1 Wh in its first 10 s and 1 Wh across minutes 4 and 5, half in each
    p = profitability(Book(), meter, TARIFF, now=T0 + 305)
    assert [(g.name, g.idle_wh) for g in p.by_gpu] == [("gpu:0", D(2))]
    first = int(T0) // 60
    assert {m - first: d.idle for m, d in meter.minutes.items()} == {
        0: {"gpu:0": D(1)}, 4: {"gpu:0": D("0.5")}, 5: {"gpu:0": D("0.5")}}
    assert p.window_s == 20  # 10 s + 5 s + 5 s metered
    # And saved and loaded (the next start, ``aitbc-miner earnings``) it is the same
    path = tmp_path / "journal.sqlite3.energy.json"
    EnergyMeter.save_json(path, meter.to_json())
    again = EnergyMeter.load(path)
    assert again.minutes == meter.minutes
    assert profitability(Book(), again, TARIFF, now=T0 + 305) == p
    # And a damaged file is an empty meter, not a crash
    path.write_text('{"minutes": {"x": 1, "5": {"busy": {"gpu:0": "nan?"}, "metered_ms": 3}}}')
    assert EnergyMeter.load(path).minutes[5].busy == {}
    path.write_text("not json")
    assert EnergyMeter.load(path).minutes == {}


async def test_the_engine_meters_fake_nvml_power_into_the_snapshot_to_the_cent(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run_engine: Any) -> None:
    # Given an engine on a fake clock over two fake NVML GPUs, with a price and a rate,
    # and a job of model llama-test holding one GPU
    fake = install(monkeypatch, FakeNvml.with_gpus(2, name="NVIDIA L4"))
    now = [T0]
    sampler = Sampler(Nvml(), interval_s=3600, clock=lambda: now[0])
    runner = HoldingGpuRunner()
    async with Devnet(Dialect.V2026_08, rate_limits=False) as devnet:
        engine = Engine(
            Tuning(miner_id="rig-profit", coordinator_url=devnet.url, heartbeat_interval_s=5.0,
                   poll_min_s=0.05, poll_max_s=0.5, tariff=TARIFF),
            miner_key=DEFAULT_MINER_KEYS[0], journal_path=tmp_path / "journal.sqlite3",
            workspace_root=tmp_path / "jobs",
            pool=SlotPool.from_specs(0, gpu_slot_specs(sampler.sample_blocking())),
            registry=RunnerRegistry([BuiltinRunner(), runner]), connect_timeout_s=1.0,
            read_timeout_s=2.0, seed=7, telemetry=sampler, clock=lambda: now[0])
        running = run_engine(engine)
        await devnet.submit_job({"type": "gpu-hold", "model": "llama-test"})
        async with asyncio.timeout(20):
            await runner.wait_started(1)
        busy = next(i for i, g in enumerate(fake.gpus) if g.uuid in runner.devices.values())
        # When NVML reads 180 W on its GPU and 36 W on the idle one, every 10 s for 30 min
        fake.gpus[busy].power_mw, fake.gpus[1 - busy].power_mw = 180_000, 36_000
        for k in range(181):
            now[0] = T0 + 10 * k
            await sampler.sample_once()
        engine.core.earnings_dirty.set()
        snap = await engine.wait_until(lambda s: s.earnings.profit is not None
                                       and s.earnings.profit.window_s == 1800, timeout=20)
        # Then the snapshot's profitability is exact: 90 Wh of work at 0.30 EUR/kWh is
        # 0.027 EUR, 18 Wh idle 0.0054 EUR; with nothing earned yet the rig loses
        # 0.0648 EUR an hour
        p = snap.earnings.profit
        assert p is not None
        assert [(g.name, g.energy_wh, g.cost, g.idle_wh) for g in p.by_gpu] == [
            (f"gpu:{busy}", D(90), D("0.027"), D(0)), (f"gpu:{1 - busy}", D(0), D(0), D(18))]
        assert [(m.name, m.energy_wh, m.cost) for m in p.by_model] == [
            ("llama-test", D(90), D("0.027"))]
        assert p.idle.cost == D("0.0054") and p.rig.cost == D("0.0324")
        assert p.rig.net_per_hour == D("-0.0648")
        runner.release.set()
        await running.stop()
