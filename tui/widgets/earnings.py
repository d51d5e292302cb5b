"""Earnings: today, 7 days, all time, last hour; issued / verified / paid with counts;
per model; failures by code. Amounts carry their currency, counts say "jobs"."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from aitbc_miner.engine.snapshot import EarningsView

from .. import fmt


def earnings_lines(e: EarningsView) -> list[Content]:
    """A small table (amounts in the currency, counts in jobs), then failures and models."""
    rows = [("today", e.today, "bold $success"), ("7 days", e.last_7_days, "$success"),
            ("all time", e.all_time, "$success"), ("last hour", e.last_hour, ""),
            ("issued", e.issued, ""), ("verified", e.verified, "$success"),
            ("paid", e.paid, "bold $success")]
    if e.flagged.jobs or e.flagged.amount:
        rows.append(("✗ NOT COUNTED", e.flagged, "bold $error"))
    amount_w = max(len(e.currency), *(len(fmt.money(m.amount)) for _, m, _ in rows))
    jobs_w = max(4, *(len(f"{m.jobs:,}") for _, m, _ in rows))
    label_w = max(len(label) for label, _, _ in rows)
    lines = [Content.styled(f"{'':<{label_w}}  {e.currency:>{amount_w}}  {'jobs':>{jobs_w}}",
                            "bold $foreground-muted")]
    for label, m, style in rows:
        lines.append(Content.assemble(
            (f"{label:<{label_w}}  ", "bold" if style.startswith("bold") else ""),
            (f"{fmt.money(m.amount):>{amount_w}}", style), (f"  {m.jobs:>{jobs_w},}", "")))
    if e.failures_by_code:
        items = [f"{code} {n:,}" for code, n in e.failures_by_code]
        lines.append(Content.assemble(("failed: ", "bold $warning"),
                                      (" · ".join(items), "$warning")))
    else:
        lines.append(Content.styled("failed: none", "$foreground-muted"))
    if e.by_model:
        items = [f"{name if name not in ('', '-') else 'other'} {fmt.money(m.amount)} "
                 f"({fmt.jobs(m.jobs)})" for name, m in e.by_model]
        lines.append(Content.assemble(("by model: ", "bold"), (" · ".join(items), "")))
    return lines


class EarningsPanel(Static, can_focus=True):
    """What the work earned, from the local ledger (shown while offline too); focus it
    (tab) to scroll when it does not fit."""

    DEFAULT_CSS = """
    EarningsPanel {
        height: 1fr; border: round $primary 40%; border-title-color: $primary;
        padding: 0 1; overflow-y: auto; scrollbar-size-vertical: 1;
    }
    EarningsPanel:focus { border: round $primary; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(markup=False, **kwargs)  # type: ignore[arg-type]
        self._shown: EarningsView | None = None
        self.border_title = "Earnings"

    def show(self, earnings: EarningsView) -> None:
        if earnings == self._shown:
            return
        self._shown = earnings
        self.border_title = f"Earnings ({earnings.currency})"
        self.update(Content("\n").join(earnings_lines(earnings)))
