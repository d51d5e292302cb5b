"""The GPU screen (``g``) and the dashboard's GPU panel: history on a time axis with
bucket means, every process with its VRAM and owner (someone else's marked), and each GPU
tied to its job, model, tokens/s and earnings. A ``FakeEngine`` with a frozen clock."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aitbc_miner.engine.codec import snapshot_from_json, to_jsonable
from aitbc_miner.engine.snapshot import (
    GpuProcess,
    ProcessRole,
    RunningJob,
    SlotState,
    SlotView,
)
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, gpu_history, sample_events, sample_snapshot
from tui.gpu_screen import GpuCard, GpuScreen, chart_width
from tui.widgets.gpu import GpuPanel, series_cells, series_rows, time_axis

from .conftest import screen_text, screenshot


def console(engine: FakeEngine) -> MinerConsole:
    return MinerConsole(engine, theme="aitbc-dark", clock=lambda: T0, started_at=T0 - 7980,
                        prefs_path=None, tick=None)


async def test_g_opens_the_gpu_screen_with_jobs_processes_and_history() -> None:
    engine = FakeEngine(sample_snapshot("busy"), sample_events())
    app = console(engine)
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, GpuScreen)
        text = screen_text(app)
        # GPU 0 tied to its job, model, tokens/s and what it earned
        assert "3f2a9c01  inference  llama3.2  41.2 tok/s" in text
        assert "20.5000 AITBC on this GPU (520 jobs)" in text
        # its processes: the backend serving the job; on GPU 1 someone else
        assert "ollama       ollama             C     10.7 GiB  83 %  backend serving 3f2a9c01" \
            in text
        assert "bob          python3            C      1.9 GiB     -  SOMEONE ELSE on GPU 1" in text
        assert "⚠ GPU 1: someone else is on it: pid 41877 (bob, python3) holds 1.9 GiB" in text
        # the history on a time axis, each cell the mean of 10 s
        assert "-10m" in text and "-5m" in text and "now" in text
        assert "10 s a cell" in text and "each cell a mean; blank: none" in text
        assert "util  avg     70 %" in text  # the mean over the ten minutes
        # a new snapshot reaches the open screen: the job ends, GPU 0 is idle
        snap = engine.snapshot()
        engine.publish(dataclasses.replace(
            snap, jobs=tuple(j for j in snap.jobs if j.slot_id and "gpu" not in j.slot_id),
            slots=tuple(dataclasses.replace(s, job_id=None, state=SlotState.IDLE)
                        if s.kind == "gpu" else s for s in snap.slots)))
        await pilot.pause()
        await pilot.pause()
        assert "41.2 tok/s" not in screen_text(app)
        assert "gpu:0     ○ idle" in screen_text(app)
        # Esc goes back; the dashboard's keys were off meanwhile (no pause was sent)
        await pilot.press("p", "escape")
        await pilot.pause()
        assert not isinstance(app.screen, GpuScreen)
        assert ("pause", ()) not in engine.calls


async def test_the_gpu_screen_at_120x34(svg_snapshot: Any) -> None:
    app = console(FakeEngine(sample_snapshot("busy"), sample_events()))
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        assert svg_snapshot == await screenshot(pilot)


async def test_a_lost_gpu_says_so_in_words_on_the_gpu_screen() -> None:
    app = console(FakeEngine(sample_snapshot("lost_gpu"), sample_events()))
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        text = screen_text(app)
        assert "GPUs · 2 · 1 LOST" in text
        assert "✗ GPU LOST (NVML: GPU is lost): it takes no work" in text
        cards = list(app.screen.query(GpuCard))
        assert [c.has_class("-lost") for c in cards] == [False, True]


async def test_the_panel_labels_each_slot_and_names_model_and_rate() -> None:
    # Given GPU 0 with two slots, one running an inference job
    snap = sample_snapshot("busy")
    gpu0 = snap.gpu.gpus[0]
    slots = ("gpu:0/0", "gpu:0/1")
    gpu0 = dataclasses.replace(gpu0, slot_ids=slots, processes=(
        GpuProcess(2981, ProcessRole.BACKEND, 10_950, "C", "ollama", "ollama"),))
    job = RunningJob("3f2a9c01d2e34f5a", "inference", "gpu:0/1", T0 - 14, T0 - 12, "running",
                     (("tokens", 512), ("tokens_per_s", 41.2)), model="llama3.2")
    snap = dataclasses.replace(
        snap, gpu=dataclasses.replace(snap.gpu, gpus=(gpu0, snap.gpu.gpus[1])),
        jobs=(job,), slots=(SlotView("gpu:0/0", "gpu", SlotState.IDLE),
                            SlotView("gpu:0/1", "gpu", SlotState.RUNNING, job.job_id),
                            SlotView(snap.gpu.gpus[1].slot_ids[0], "gpu", SlotState.IDLE)))
    app = console(FakeEngine(snap, sample_events()))
    async with app.run_test(size=(120, 34)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        # Then the two slots of GPU 0 have two labels, and the job its model and rate
        assert "gpu:0/0 ○ idle · gpu:0/1 ● 3f2a9c01 llama3.2 41.2 tok/s" in text
        # And GPU 1, where someone else is, says so; GPU 0 (only its backend) does not
        assert "gpu:1 ○ idle  ⚠ 1 other process" in text and text.count("other process") == 1
        assert app.query_one(GpuPanel).border_subtitle == "g details"


def test_sparkline_cells_are_bucket_means_and_gaps_stay_blank() -> None:
    # Given ten minutes alternating 0 % and 100 % every bucket, shown in 60 cells
    history = gpu_history([0.0, 100.0] * 60, 1000, 60, 100)
    cells = series_cells(history.util_pct.resample(60), 60, 100.0)
    # Then each cell is the mean (50 %: a middle block), never the peak (a full block)
    assert set(cells) == {"▅"}
    assert series_cells([None, 100.0, 0.0], 4, 100.0) == "  █▁"
    assert series_rows([None, 100.0, 50.0, 0.0], 4, 100.0, rows=2) == [" █▁ ", " ██▁"]
    assert chart_width(120, 97) == 60 and chart_width(120, 200) == 120
    assert chart_width(120, 50) == 40


def test_time_axis_spans_the_history() -> None:
    axis = time_axis(600.0, 60)
    assert axis.startswith("-10m") and axis.endswith("now") and len(axis) == 60
    assert "-5m" in axis
    assert time_axis(45.0, 10).split() == ["-45s", "now"]


def test_the_gpu_view_reaches_an_attached_console_whole() -> None:
    """History, processes and warnings travel over the control socket's JSON and back."""
    snap = sample_snapshot("busy")
    back = snapshot_from_json(json.loads(json.dumps(to_jsonable(snap))))
    assert back.gpu == snap.gpu
    assert back.gpu.gpus[1].foreign[0].role is ProcessRole.FOREIGN
    assert back.gpu.gpus[0].history.util_pct.means[20] is None  # a gap stays a gap
