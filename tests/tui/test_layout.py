"""The dashboard fits the terminal: at 80x24, 100x40, 120x34 and 200x50 every panel is
whole and bordered, none leaves empty rows, and model names are whole.

A busy rig drawn from a hand-made snapshot: two GPUs with two slots each (engine slot
ids ``gpu:0/0`` ... ``gpu:1/1``), four CPU slots, eight running jobs, four of them
inference on models with long names. The facts are asserted on the widgets' regions
and on the screen's text; the SVG snapshots show the same screens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from aitbc_miner.engine.snapshot import RunningJob, SlotState, SlotView, Snapshot
from tui.app import MinerConsole
from tui.fake import T0, FakeEngine, receipts, sample_events, sample_snapshot, two_gpus
from tui.widgets.earnings import EarningsPanel
from tui.widgets.events import EventsPanel
from tui.widgets.gpu import GpuPanel
from tui.widgets.header import StatusHeader
from tui.widgets.jobs import JobsTable
from tui.widgets.receipts import ReceiptsTable
from tui.widgets.slots import SlotsPanel

from .conftest import screen_text, screenshot
from .test_snapshots import settle as settle_events

SIZES = [(80, 24), (100, 40), (120, 34), (200, 50)]
MODELS = ("llama3.2:latest", "qwen2.5-coder:32b-instruct", "deepseek-r1:14b",
          "mistral:7b-instruct")
GPU_SLOTS = ("gpu:0/0", "gpu:0/1", "gpu:1/0", "gpu:1/1")


def busy_rig(now: float = T0) -> Snapshot:
    """Eight running jobs: inference on each GPU slot (long model names), CPU work on four."""
    base = sample_snapshot("busy", now=now)
    a, b = two_gpus().gpus
    gpu = dataclasses.replace(two_gpus(), gpus=(
        dataclasses.replace(a, slot_ids=GPU_SLOTS[:2]),
        dataclasses.replace(b, slot_ids=GPU_SLOTS[2:], util_gpu_pct=64, power_w=120)))
    jobs = [RunningJob(f"a{i}c0ffee{i:02d}d2e34f5a", "inference", slot, now - 20 - 3 * i,
                       now - 18 - 3 * i, "running",
                       (("tokens", 100 * (i + 1)), ("tokens_per_s", 40.5 - i)), model=model)
            for i, (slot, model) in enumerate(zip(GPU_SLOTS, MODELS, strict=True))]
    jobs += [RunningJob(f"b{i}beef{i:02d}77aa4410", kind, f"cpu:{i}", now - 5 - i, now - 4 - i,
                        "running", (("pct", 10 * (i + 2)),))
             for i, kind in enumerate(("sha256", "sleep", "sleep", "sha256"))]
    slots = tuple(SlotView(j.slot_id or "", "gpu" if j.slot_id in GPU_SLOTS else "cpu",
                           SlotState.RUNNING, j.job_id) for j in jobs)
    recs = receipts(40, now=now, bad_every=7)
    return dataclasses.replace(
        base, gpu=gpu, slots=slots, jobs=tuple(jobs), receipts=recs,
        counters=dataclasses.replace(base.counters, receipts=len(recs),
                                     receipts_flagged=sum(1 for r in recs if not r.counted)))


def busy_console(**kwargs: Any) -> MinerConsole:
    engine = FakeEngine(busy_rig(), sample_events())
    return MinerConsole(engine, theme="aitbc-dark", clock=lambda: T0, started_at=T0 - 7980,
                        prefs_path=None, tick=None, **kwargs)


async def settle(pilot: Any) -> None:
    """The event log has taken the fake's events, and the layout has settled."""
    await settle_events(pilot)
    await pilot.pause()


PANELS = (GpuPanel, SlotsPanel, JobsTable, ReceiptsTable, EarningsPanel, EventsPanel)


def assert_whole(app: MinerConsole, panel: Any, width: int, height: int) -> None:
    """Inside the screen above the footer, at least one line inside its border, and both
    border rows drawn where the panel says they are."""
    name = type(panel).__name__
    region = panel.region
    text = screen_text(app).splitlines()
    header = app.dashboard.query_one(StatusHeader).region
    assert region.x >= 0 and region.y >= header.bottom, f"{name} over the header: {region}"
    assert region.right <= width and region.bottom <= height - 1, (
        f"{name} runs off the screen or under the footer: {region} at {width}x{height}")
    assert region.height >= 3, f"{name} has no line inside its border: {region}"
    top, bottom = text[region.y], text[region.bottom - 1]
    assert top[region.x] == "╭" and top[region.right - 1] == "╮", f"{name} top: {top!r}"
    assert bottom[region.x] == "╰" and bottom[region.right - 1] == "╯", (
        f"{name} bottom: {bottom!r}")


def shown_panels(app: MinerConsole) -> list[Any]:
    return [p for cls in PANELS for p in app.dashboard.query(cls) if p.display
            and all(a.display for a in p.ancestors_with_self if hasattr(a, "display"))]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_every_panel_is_whole_and_model_names_are_whole(size: tuple[int, int]) -> None:
    width, height = size
    app = busy_console()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        dash = app.dashboard
        narrow = width < 100
        assert dash.compact is narrow  # 100x40 gets the full layout
        views = ["receipts", "earnings", "events"] if narrow else [None]
        seen: set[str] = set()
        for view in views:
            if view is not None:
                dash.view = view
                await pilot.pause()
                await pilot.pause()
            panels = shown_panels(app)
            for panel in panels:
                assert_whole(app, panel, width, height)
                seen.add(type(panel).__name__)
            regions = [p.region for p in panels]
            for i, r in enumerate(regions):  # no two panels overlap
                assert not any(r.overlaps(o) for o in regions[i + 1:]), regions
        expected = {c.__name__ for c in PANELS} - ({"SlotsPanel"} if narrow else set())
        assert seen == expected
        # every running job is a row, and each model name is whole on the screen
        jobs = dash.jobs
        assert jobs.row_count == 8
        assert jobs.columns["model"].width >= max(len(m) for m in MODELS)
        screen = screen_text(app)
        for model in MODELS:
            assert model in screen, f"{model} cut at {width}x{height}"
        # the state column is as wide as its longest word, not the spare width
        assert jobs.columns["state"].width == len("running")
        # the GPU panel has no empty rows: its row is as tall as its lines
        gpu = dash.query_one(GpuPanel)
        lines = gpu.get_content_height(dash.size, app.size, gpu.content_region.width)
        assert gpu.region.height == lines + 2
        # and the slots beside it fit in the same height
        if not narrow:
            slots = dash.query_one(SlotsPanel)
            assert slots.region.height == gpu.region.height
            assert slots.region.y == gpu.region.y


@pytest.mark.parametrize("size", [(100, 40), (120, 34)], ids=["100x40", "120x34"])
async def test_header_line_two_is_never_cut(size: tuple[int, int]) -> None:
    """Jobs waiting for a slot and outcomes in the outbox make line 2 long: it is said
    in its shorter wording, whole, rather than cut."""
    snap = busy_rig()
    waiting = tuple(dataclasses.replace(j, job_id=f"c{i}{j.job_id[2:]}", slot_id=None,
                                        state="queued", started_at=None)
                    for i, j in enumerate(snap.jobs[:3]))
    snap = dataclasses.replace(snap, jobs=snap.jobs + waiting, outbox=12_345)
    app = MinerConsole(FakeEngine(snap, sample_events()), theme="aitbc-dark",
                       clock=lambda: T0, started_at=T0 - 7980, prefs_path=None, tick=None)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        line = screen_text(app).splitlines()[1].rstrip()
        assert "…" not in line and "outbox 12345" in line and "poll 0.50 s" in line, line
        assert "3 waiting" in line


@pytest.mark.parametrize("size", [(100, 40), (200, 50)], ids=["100x40", "200x50"])
async def test_receipts_and_earnings_get_room_at_the_larger_sizes(
        size: tuple[int, int]) -> None:
    app = busy_console()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        receipts_panel = app.dashboard.receipts
        earnings = app.dashboard.query_one(EarningsPanel)
        assert receipts_panel.region.height - 3 >= 8  # border, header: 8 receipts or more
        assert earnings.region.height - 2 >= 8
        assert app.dashboard.events.region.height - 2 >= 3


async def test_slots_of_one_gpu_have_labels_of_their_own() -> None:
    app = busy_console()
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(pilot)
        jobs = app.dashboard.jobs
        labels = [str(jobs.get_cell(job_id, "slot")) for job_id in jobs.shown]
        assert [label for label in labels if label.startswith("gpu")] == list(GPU_SLOTS)
        slots_text = str(app.dashboard.query_one(SlotsPanel).render())
        for label in GPU_SLOTS:
            assert label in slots_text


def test_a_uuid_named_slot_is_labelled_by_its_gpu_and_its_place() -> None:
    from tui.widgets.slots import slot_label

    a, b = two_gpus().gpus
    status = dataclasses.replace(two_gpus(), gpus=(
        a, dataclasses.replace(b, slot_ids=("gpu:GPU-9f8e7d6c-1111/0", "gpu:GPU-9f8e7d6c-1111/1"))))
    assert slot_label(a.slot_ids[0], status) == "gpu:0"  # one slot: the GPU's index
    assert [slot_label(s, status) for s in status.gpus[1].slot_ids] == ["gpu:1/0", "gpu:1/1"]
    assert slot_label("gpu:1/1", status) == "gpu:1/1"  # the engine's own ids stay as they are


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_busy_rig_screens(size: tuple[int, int], svg_snapshot: Any) -> None:
    app = busy_console()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert svg_snapshot == await screenshot(pilot)
