"""The money screen (key ``e``): AITBC per hour now against the last hour and day, the
last 24 hours as bars, earnings per GPU and per model, the failure rate by error code,
and profitability (energy cost and net earnings per hour), all from the snapshot's
``Earnings``. Esc or ``e`` closes it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from aitbc_miner.engine.snapshot import (
    Earnings,
    Money,
    Profitability,
    ProfitLine,
    Snapshot,
    format_amount,
)

from .messages import SnapshotArrived
from .protocol import EngineLike
from .screens import ConsoleDialog

BLOCKS = " ▁▂▃▄▅▆▇█"
CHART_ROWS = 5


def hourly_chart(hourly: Sequence[tuple[int, Money]], rows: int = CHART_ROWS) -> list[str]:
    """The last 24 hours as vertical bars, oldest left, two cells and a gap per hour,
    under a line that says the scale, with the local hour under every third bar."""
    if not any(m.jobs for _, m in hourly):
        return ["no earnings in the last 24 hours"]
    top = max(m.amount for _, m in hourly)
    lines = [f"AITBC earned per hour, last 24 hours (local time); top bar "
             f"{format_amount(top)}"]
    for row in range(rows, 0, -1):
        cells = []
        for _, m in hourly:
            eighths = 0 if top <= 0 else int(m.amount * rows * 8 / top)
            level = max(0, min(8, eighths - (row - 1) * 8))
            if m.amount > 0 and row == 1 and level == 0:
                level = 1  # a nonzero hour never looks empty
            cells.append(BLOCKS[level] * 2)
        lines.append(" ".join(cells).rstrip())
    labels = "".join(f"{time.localtime(at).tm_hour:02d}" + " " * 7 if i % 3 == 0 else ""
                     for i, (at, _) in enumerate(hourly))
    lines.append(labels.rstrip())
    return lines


def money_table(title: str, groups: Sequence[tuple[str, Money]], currency: str,
                limit: int = 8) -> list[Content]:
    if not groups:
        return [Content.styled(f"{title}: none yet", "$foreground-muted")]
    name_w = min(24, max(len(title), *(len(k) for k, _ in groups[:limit])))
    amount_w = max(len(currency), *(len(format_amount(m.amount)) for _, m in groups[:limit]))
    lines = [Content.styled(f"{title:<{name_w}}  {currency:>{amount_w}}  {'jobs':>7}", "bold")]
    for name, m in groups[:limit]:
        lines.append(Content(f"{name[:name_w]:<{name_w}}  {format_amount(m.amount):>{amount_w}}"
                             f"  {m.jobs:>7,}"))
    if len(groups) > limit:
        lines.append(Content.styled(f"… and {len(groups) - limit} more", "$foreground-muted"))
    return lines


def rate_lines(e: Earnings) -> list[Content]:
    c = e.currency
    return [
        Content.assemble((f"{c} per hour  ", "bold"),
                         (f"now {format_amount(e.per_hour_now)}", "bold $success"),
                         ("  (last 10 min)", "$foreground-muted"),
                         (f" · last hour {format_amount(e.per_hour_last_hour)}", ""),
                         (f" · last day {format_amount(e.per_hour_last_day)}", "")),
        Content(f"today {format_amount(e.today.amount, c)} ({e.today.jobs:,} jobs) · "
                f"last hour {format_amount(e.last_hour.amount, c)} ({e.last_hour.jobs:,}) · "
                f"all time {format_amount(e.verified.amount, c)} ({e.verified.jobs:,})"),
    ]


def failure_lines(e: Earnings) -> list[Content]:
    def rate(value: float | None) -> str:
        return "no job finished" if value is None else f"{value:.1%} failed"

    style = "bold $warning" if (e.failure_rate_now or 0) > 0 else ""
    lines = [Content.assemble(("Failure rate  ", "bold"),
                              (f"last 10 min: {rate(e.failure_rate_now)}", style),
                              (f" · last hour: {rate(e.failure_rate_last_hour)} of "
                               f"{e.finished_last_hour:,} finished", ""))]
    if e.failures_last_hour:
        lines.append(Content.styled("  last hour by code: " + " · ".join(
            f"{code} {n:,}" for code, n in e.failures_last_hour), "$warning"))
    if e.failures_by_code:
        lines.append(Content("  all time by code: " + " · ".join(
            f"{code} {n:,}" for code, n in e.failures_by_code)))
    return lines


def profit_lines(p: Profitability | None) -> list[Content]:
    if p is None:
        return [Content.styled(
            "Profitability: set earnings.power_price_per_kwh (and earnings.aitbc_rate) in "
            "the config to see energy cost and net earnings", "$foreground-muted")]
    c = p.currency
    rate = ("no AITBC rate set (earnings.aitbc_rate): no net figure"
            if p.aitbc_rate is None else f"1 AITBC = {format_amount(p.aitbc_rate, c, 2)}")
    head = Content.assemble(("Profitability  ", "bold"), (
        f"{format_amount(p.price_per_kwh, c, 2)}/kWh · {rate}", ""))
    if not p.metered:
        return [head, Content.styled("  no GPU reported its power in the last hour",
                                     "$foreground-muted")]
    lines = [head, Content.styled(
        f"  measured over the last {_span(p.window_s)} (energy while jobs ran is theirs; "
        "idle is the rig's overhead)", "$foreground-muted"),
        Content.styled(f"  {'':<18} {'AITBC':>10} {'energy':>11} {'cost':>10} "
                       f"{'net ' + c + '/h':>12}", "bold")]
    groups = (("", (p.rig, p.idle)), ("by GPU", p.by_gpu), ("by model", p.by_model))
    for title, group in groups:
        if title and group:
            lines.append(Content.styled(f"  {title}", "bold"))
        for line in group:
            lines.append(_profit_row(line, c))
    return lines


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _profit_row(line: ProfitLine, currency: str) -> Content:
    net = line.net_per_hour
    style = "" if net is None else ("bold $success" if net > 0 else "bold $error")
    words = "" if net is None else (" gain" if net > 0 else " LOSS" if net < 0 else "")
    return Content.assemble(
        (f"  {line.name[:18]:<18} {format_amount(line.earned):>10} "
         f"{line.energy_wh:>8,.1f} Wh {format_amount(line.cost, '', 4):>10} ", ""),
        (f"{'-' if net is None else format_amount(net, '', 4):>12}{words}", style))


def money_lines(e: Earnings) -> list[Content]:
    lines = rate_lines(e) + [Content("")]
    lines += [Content(text) for text in hourly_chart(e.hourly)] + [Content("")]
    gpus = money_table("by GPU", e.by_gpu, e.currency)
    models = money_table("by model", e.by_model, e.currency)
    width = max(len(line.plain) for line in gpus) + 4
    for i in range(max(len(gpus), len(models))):
        left = gpus[i] if i < len(gpus) else Content("")
        right = models[i] if i < len(models) else Content("")
        lines.append(Content.assemble(left, " " * (width - len(left.plain)), right))
    lines.append(Content(""))
    return lines + failure_lines(e) + [Content("")] + profit_lines(e.profit)


class MoneyScreen(ConsoleDialog, ModalScreen[None]):
    """Money over time; follows the engine's snapshots while open (its own listener,
    posting to this screen, so a backlog collapses into the newest snapshot)."""

    DEFAULT_CSS = """
    MoneyScreen { align: center middle; background: $background 60%; }
    MoneyScreen > VerticalScroll {
        width: 100%; height: 100%; border: round $primary; background: $surface;
        padding: 0 1; border-title-color: $primary; border-subtitle-color: $foreground-muted;
    }
    MoneyScreen #money { width: 1fr; height: auto; }
    """
    BINDINGS = [Binding("escape", "close", "Close"), Binding("e", "close", "Close", show=False)]

    def __init__(self, engine: EngineLike, snap: Snapshot | None) -> None:
        super().__init__()
        self.engine = engine
        self._shown: Earnings | None = None
        self._first = snap.earnings if snap is not None else Earnings()
        self._remove_listener: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "Money"
            box.border_subtitle = "Esc or e closes"
            yield Static(id="money", markup=False)

    def on_mount(self) -> None:
        self._show(self._first)
        def arrived(snap: Snapshot) -> None:
            self.post_message(SnapshotArrived(snap))

        self._remove_listener = self.engine.add_listener(arrived)

    def on_unmount(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        message.stop()
        self._show(message.snapshot.earnings)

    def _show(self, earnings: Earnings) -> None:
        if earnings == self._shown:
            return
        self._shown = earnings
        self.query_one(VerticalScroll).border_title = f"Money ({earnings.currency})"
        self.query_one("#money", Static).update(Content("\n").join(money_lines(earnings)))

    def action_close(self) -> None:
        self.dismiss(None)
