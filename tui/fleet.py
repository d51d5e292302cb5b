"""The fleet console (``aitbc-miner fleet``): every rig of a fleet side by side, from Redis.

A table of rigs (state, GPUs, running/slots, jobs done and failed, AITBC per hour, last
heartbeat, problems), the selected rig's history under it, and keys that pause, resume,
drain or undrain the selected rig through Redis, each after a confirm. The console only
reads and sends through a ``FleetSource`` (the engine's fleet view and command channel);
it never talks to Redis itself. When Redis does not answer, the top line says
``fleet: Redis unreachable``, the last rows stay (marked as old) and each refresh tries
again, so the console picks up by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Static

from aitbc_miner.fleet.view import (
    FleetError,
    FleetView,
    MetricsSample,
    NotAllowed,
    RigView,
)

from . import fmt, render_memory
from .charset import AsciiFilter, unicode_ok
from .palette import Palette
from .screens import ConfirmScreen
from .theming import DEFAULT_THEME, load_themes
from .widgets.keybar import KeyBar

UNKNOWN = "?"
#: The command keys: what each asks the rig, in the confirm's words.
ASK = {"pause": "stop claiming new jobs (running ones go on)",
       "resume": "claim jobs again",
       "drain": "stop claiming, let running jobs finish and deliver, then idle",
       "undrain": "end the drain and claim jobs again"}


class FleetSource(Protocol):
    """What the console reads and sends through (``aitbc_miner.host.fleetcmd.RedisFleet``)."""

    fleet: str
    user: str  # the Redis ACL user commands are sent as
    where: str  # Redis's address, without credentials

    async def read(self, now: float) -> FleetView: ...

    async def history(self, rig: str) -> tuple[MetricsSample, ...]: ...

    async def send(self, rig: str, command: str) -> str: ...


# --- cells -----------------------------------------------------------------------


def _count(value: int | None) -> str:
    return UNKNOWN if value is None else f"{value:,}"


def _aitbc(value: Decimal | None) -> str:
    return UNKNOWN if value is None else f"{value:,.4f}"


def gpus_cell(rig: RigView) -> str:
    """``2 GPU 93 % 783 W``: how many, mean utilisation, total power."""
    if rig.gpus is None:
        return UNKNOWN
    if not rig.gpus:
        return "no GPU"
    utils = [g.util_pct for g in rig.gpus if g.util_pct is not None]
    powers = [g.power_w for g in rig.gpus if g.power_w is not None]
    util = f" {sum(utils) / len(utils):.0f} %" if utils else ""
    power = f" {sum(powers):.0f} W" if powers else ""
    return f"{len(rig.gpus)} GPU{util}{power}"


def problems_cell(rig: RigView) -> str:
    shown = list(rig.problems) if rig.problems is not None else []
    if rig.unreadable:
        shown.append(f"unreadable: {', '.join(rig.unreadable)}")
    if rig.problems is None and not rig.unreadable:
        return UNKNOWN
    if not shown:
        return "-"
    more = f" (+{len(shown) - 1})" if len(shown) > 1 else ""
    return shown[0] + more


def heartbeat_cell(rig: RigView, now: float) -> str:
    return fmt.age(rig.seen, now) if rig.seen is not None else "never"


def state_word(rig: RigView) -> str:
    if rig.lease_expired:
        return "gone"
    if not rig.reported:
        return "no report"
    return rig.state or UNKNOWN


# --- widgets ---------------------------------------------------------------------


class FleetHeader(Static):
    """The top line: the fleet, Redis, who commands are sent as; or why nothing is fresh."""

    DEFAULT_CSS = """
    FleetHeader { height: 1; padding: 0 1; background: $panel; }
    FleetHeader.trouble { background: $error 30%; }
    """

    def show(self, text: str, trouble: bool) -> None:
        self.set_class(trouble, "trouble")
        self.update(Text(text))


class RigsTable(DataTable[Text]):
    """One row per rig, keyed by rig id (the cursor stays on its rig across refreshes)."""

    DEFAULT_CSS = """
    RigsTable {
        height: auto; max-height: 60%; min-height: 5; border: round $primary 40%;
        border-title-color: $primary; scrollbar-size-vertical: 1;
    }
    RigsTable:focus { border: round $primary; }
    RigsTable.stale { opacity: 60%; }
    """
    # Fixed widths: columns that do not jump as rigs come and go. (Auto widths are also
    # measured only once the table is idle, and Textual 8.2.8 keeps rows drawn before that
    # at the old widths until a cell changes.)
    COLUMNS = (("rig", "Rig", 12), ("state", "State", 9), ("gpus", "GPUs", 16),
               ("slots", "Run/Slots", 9), ("done", "Done", 7), ("failed", "Failed", 6),
               ("rate", "AITBC/h", 9), ("beat", "Heartbeat", 9), ("problems", "Problems", 30))

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.border_title = "rigs"
        for key, label, width in self.COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def selected_rig(self) -> str | None:
        if not self.row_count:
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return None if row_key.value is None else str(row_key.value)

    def show(self, view: FleetView, now: float) -> None:
        palette = Palette(self.app)
        wanted = {rig.rig: rig for rig in view.rigs}
        for row_key in list(self.rows):
            if row_key.value not in wanted:
                self.remove_row(row_key)
        for rig in view.rigs:
            cells = self._cells(rig, now, palette)
            if rig.rig in self.rows:
                for (column, _, _), cell in zip(self.COLUMNS, cells, strict=True):
                    self.update_cell(rig.rig, column, cell)
            else:
                self.add_row(*cells, key=rig.rig)
        self.border_title = f"rigs ({view.live} live, {len(view.rigs) - view.live} gone)"

    @staticmethod
    def _cells(rig: RigView, now: float, palette: Palette) -> list[Text]:
        state = state_word(rig)
        state_style = (palette.error if rig.lease_expired else
                       palette.warn if state in ("paused", "draining", "drained") else
                       palette.ok if state == "running" else palette.plain)
        problems = problems_cell(rig)
        running = f"{_count(rig.running)}/{_count(rig.slots)}"
        return [
            Text(rig.label, style=palette.muted if rig.lease_expired else palette.plain),
            Text(state, style=state_style),
            Text(gpus_cell(rig)),
            Text(running, justify="right"),
            Text(_count(rig.completed), justify="right"),
            Text(_count(rig.failed), justify="right",
                 style=palette.warn if rig.failed else palette.plain),
            Text(_aitbc(rig.earned_per_hour), justify="right"),
            Text(heartbeat_cell(rig, now),
                 style=palette.error if rig.lease_expired else palette.plain),
            Text(problems, style=palette.warn if problems not in ("-", UNKNOWN)
                 else palette.muted),
        ]


class RigPanel(Static):
    """The selected rig: where it works, each GPU, and its metrics stream as sparklines
    (oldest left, newest at the right edge)."""

    DEFAULT_CSS = """
    RigPanel {
        height: 1fr; min-height: 9; border: round $secondary 40%; padding: 0 1;
        border-title-color: $secondary;
    }
    """
    LABEL = 12

    shown: tuple[RigView | None, Sequence[MetricsSample], float] = (None, (), 0.0)

    def on_resize(self) -> None:  # the sparklines fill the width
        self.show(*self.shown)

    def show(self, rig: RigView | None, samples: Sequence[MetricsSample], now: float) -> None:
        self.shown = (rig, samples, now)
        if rig is None:
            self.border_title = "history"
            self.update(Text("no rig selected"))
            return
        span = ""
        times = [s.ts for s in samples if s.ts is not None]
        if len(times) > 1:
            span = f" over {fmt.duration(times[-1] - times[0])}"
        count = f"{len(samples)} sample" + ("" if len(samples) == 1 else "s")
        self.border_title = f"{rig.label}: {count}{span}"
        lines = [*self._about(rig, now), Text("")]
        if samples:
            lines += self._history(samples)
        else:
            lines.append(Text("no metrics history in Redis for this rig", style="dim"))
        self.update(Text("\n").join(lines))

    def _about(self, rig: RigView, now: float) -> list[Text]:
        lease = ("lease: ?" if rig.lease_until is None else
                 f"lease ended {fmt.age(rig.lease_until, now)}" if rig.lease_expired else
                 f"lease {fmt.duration(rig.lease_until - now)} left")
        about = [f"coordinator {rig.coordinator or UNKNOWN}",
                 f"dialect {rig.dialect or UNKNOWN}", f"version {rig.version or UNKNOWN}",
                 lease, f"earned {_aitbc(rig.earned)} AITBC",
                 f"outbox {_count(rig.outbox)}"]
        lines = [Text(" · ".join(about))]
        for problem in rig.problems or ():
            lines.append(Text(f"problem: {problem}", style="bold"))
        if rig.unreadable:
            lines.append(Text(f"not understood: {', '.join(rig.unreadable)}", style="bold"))
        for gpu in rig.gpus or ():
            index = UNKNOWN if gpu.index is None else str(gpu.index)
            lines.append(Text(
                f"GPU {index}  {gpu.name or UNKNOWN}  {fmt.pct(gpu.util_pct)}  "
                f"{fmt.vram(gpu.mem_used_mib, gpu.mem_total_mib)}  {fmt.celsius(gpu.temp_c)}  "
                f"{'N/A' if gpu.power_w is None else f'{gpu.power_w:.0f} W'}"))
        return lines

    def _history(self, samples: Sequence[MetricsSample]) -> list[Text]:
        width = max(8, self.size.width - self.LABEL - 16)
        return [
            self._line("GPU util", [s.gpu_util_pct for s in samples], width, "{:.0f} %", 100.0),
            self._line("Power", [s.power_w for s in samples], width, "{:.0f} W"),
            self._line("Jobs done", _per_sample(samples, lambda s: s.completed), width,
                       "+{:.0f}"),
            self._line("Failed", _per_sample(samples, lambda s: s.failed), width, "+{:.0f}"),
            self._line("Earned", [None if s.earned is None else float(s.earned)
                                  for s in samples], width, "{:,.4f}"),
            self._line("Outbox", [_f(s.outbox) for s in samples], width, "{:.0f}"),
            self._line("Problems", [_f(s.problems) for s in samples], width, "{:.0f}"),
        ]

    def _line(self, label: str, values: Sequence[float | None], width: int, unit: str,
              top: float | None = None) -> Text:
        known = [v for v in values if v is not None]
        line = Text(f"{label:<{self.LABEL}}", style="bold")
        if not known:
            return line + Text("no data", style="dim")
        series = [v if v is not None else 0.0 for v in values]
        ceiling = top if top is not None else max(max(known), 1e-9)
        line += Text(fmt.sparkline(series, width, ceiling))
        line += Text(f"  {unit.format(known[-1])}")
        return line


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)


def _per_sample(samples: Sequence[MetricsSample],
                counter: Callable[[MetricsSample], int | None]) -> list[float | None]:
    """How much a total grew since the sample before (a restart's drop counts as 0)."""
    out: list[float | None] = []
    previous: int | None = None
    for sample in samples:
        value = counter(sample)
        out.append(None if value is None or previous is None else float(max(0, value - previous)))
        previous = value if value is not None else previous
    return out


# --- the App ---------------------------------------------------------------------


class FleetConsole(App[None]):
    """``FleetConsole(source).run_async()``; ``refresh_s=None`` reads once (tests)."""

    TITLE = "aitbc-miner fleet"
    BINDINGS = [
        Binding("p", "command('pause')", "Pause"),
        Binding("r", "command('resume')", "Resume"),
        Binding("d", "command('drain')", "Drain"),
        Binding("D", "command('undrain')", "Undrain"),
        Binding("g", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]
    CSS = "Screen { layout: vertical; }"

    def __init__(self, source: FleetSource, *, theme: str | None = None,
                 clock: Callable[[], float] = time.time, refresh_s: float | None = 2.0,
                 environ: Mapping[str, str] | None = None) -> None:
        render_memory.apply()  # drawn lines and styles freed when dropped
        super().__init__()
        if not unicode_ok(environ):
            self._filters.append(AsciiFilter())
        self.source = source
        self.clock = clock
        self.refresh_s = refresh_s
        self._wanted_theme = theme or DEFAULT_THEME
        self.view: FleetView | None = None
        self.problem: str | None = None  # why the rows are not fresh
        self.history_rig: str | None = None
        self.sent: list[tuple[str, str]] = []  # (rig, command) the console sent

    def on_load(self) -> None:
        for theme in load_themes().values():
            self.register_theme(theme)
        if self._wanted_theme in self.available_themes:
            self.theme = self._wanted_theme

    def compose(self) -> ComposeResult:
        yield FleetHeader(id="status")
        yield RigsTable(id="rigs")
        yield RigPanel(id="history")
        yield KeyBar()

    @property
    def status(self) -> FleetHeader:
        return self.query_one(FleetHeader)

    @property
    def rigs(self) -> RigsTable:
        return self.query_one(RigsTable)

    @property
    def history(self) -> RigPanel:
        return self.query_one(RigPanel)

    def on_mount(self) -> None:
        self.status.show(f"fleet {self.source.fleet}: reading {self.source.where} ...", False)
        self.history.show(None, (), self.clock())
        self.rigs.focus()
        self._poll()

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh_fleet()
            except Exception as exc:  # a bug must not stop the refreshes: say it, go on
                self._trouble(f"fleet: cannot show the fleet: {type(exc).__name__}: {exc}")
            if self.refresh_s is None:
                return
            await asyncio.sleep(self.refresh_s)

    async def refresh_fleet(self) -> None:
        """Read the fleet (and the selected rig's history) once; say so when Redis fails."""
        try:
            view = await self.source.read(self.clock())
            rig = self.rigs.selected_rig or (view.rigs[0].rig if view.rigs else None)
            samples = await self.source.history(rig) if rig is not None else ()
        except FleetError as exc:
            self._trouble(f"fleet: {exc}")
            return
        self.view, self.problem = view, None
        self.rigs.set_class(False, "stale")
        self.rigs.show(view, self.clock())
        self._show_history(rig, samples)
        self._say_status()

    def _trouble(self, text: str) -> None:
        self.problem = text
        self.rigs.set_class(self.view is not None, "stale")
        self._say_status()

    def _say_status(self) -> None:
        fleet, user = self.source.fleet, self.source.user
        if self.problem is not None:
            old = ""
            if self.view is not None:
                old = f"; rows as of {fmt.clock_time(self.view.at, self.clock())}"
            self.status.show(f"{self.problem} ({self.source.where}), retrying{old}", True)
            return
        view = self.view
        count = f"{len(view.rigs)} rig" + ("" if len(view.rigs) == 1 else "s") if view else ""
        self.status.show(f"fleet {fleet} on {self.source.where}: {count}; commands as {user}",
                         False)

    def _show_history(self, rig: str | None, samples: Sequence[MetricsSample]) -> None:
        self.history_rig = rig
        seen = self.view.rig(rig) if self.view is not None and rig is not None else None
        self.history.show(seen, samples, self.clock())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        rig = None if event.row_key.value is None else str(event.row_key.value)
        if rig is not None and rig != self.history_rig:
            self._load_history(rig)

    @work(exclusive=True, group="history", exit_on_error=False)
    async def _load_history(self, rig: str) -> None:
        try:
            samples = await self.source.history(rig)
        except FleetError as exc:
            self._trouble(f"fleet: {exc}")
            return
        if self.rigs.selected_rig == rig:
            self._show_history(rig, samples)

    def action_refresh(self) -> None:
        self.run_worker(self.refresh_fleet(), group="refresh", exit_on_error=False)

    def action_command(self, command: str) -> None:
        rig = self.rigs.selected_rig
        seen = self.view.rig(rig) if self.view is not None and rig is not None else None
        if rig is None or seen is None:
            self.notify("no rig selected", severity="warning")
            return
        question = (f"{command.capitalize()} rig {seen.label}? It will {ASK[command]}. "
                    f"Sent through Redis as {self.source.user}.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._send(rig, seen.label, command)

        self.push_screen(ConfirmScreen(question, yes=command.capitalize()), answered)

    @work(group="send", exit_on_error=False)
    async def _send(self, rig: str, label: str, command: str) -> None:
        try:
            await self.source.send(rig, command)
        except NotAllowed as exc:
            self._say(f"{command} {label}: {exc} (user {self.source.user})", "error")
            return
        except FleetError as exc:
            self._say(f"{command} {label}: fleet: {exc}; not sent", "error")
            return
        self.sent.append((rig, command))
        self._say(f"{command} sent to {label}", "information")

    def _say(self, text: str, severity: SeverityLevel) -> None:
        self.notify(text, severity=severity, timeout=8 if severity == "error" else 4,
                    markup=False)
