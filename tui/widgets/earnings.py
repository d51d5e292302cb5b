"""Earnings: today, 7 days, all time, last hour; issued / verified / paid with counts;
AITBC per hour now against the last hour and day; net per hour where profitability is
configured; failures by code with the recent failure rate; per model. Amounts carry
their currency, counts say "jobs". The money screen (key ``e``) shows it all at length."""

from __future__ import annotations

from textual.content import Content

from aitbc_miner.engine.snapshot import Earnings, format_amount

from .. import fmt
from .steady import SteadyStatic


def earnings_lines(e: Earnings) -> list[Content]:
    """A small table (amounts in the currency, counts in jobs), then rates, profit,
    failures and models."""
    rows = [("today", e.today, "bold $success"), ("7 days", e.last_7_days, "$success"),
            ("all time", e.verified, "$success"), ("last hour", e.last_hour, ""),
            ("issued", e.issued, ""), ("paid", e.paid, "bold $success")]
    if e.flagged.jobs or e.flagged.amount:
        rows.append(("✗ NOT COUNTED", e.flagged, "bold $error"))
    amount_w = max(len(e.currency), *(len(format_amount(m.amount)) for _, m, _ in rows))
    jobs_w = max(4, *(len(f"{m.jobs:,}") for _, m, _ in rows))
    label_w = max(len(label) for label, _, _ in rows)
    table = [Content.styled(f"{'':<{label_w}}  {e.currency:>{amount_w}}  {'jobs':>{jobs_w}}",
                            "bold $foreground-muted")]
    for label, m, style in rows:
        table.append(Content.assemble(
            (f"{label:<{label_w}}  ", "bold" if style.startswith("bold") else ""),
            (f"{format_amount(m.amount):>{amount_w}}", style), (f"  {m.jobs:>{jobs_w},}", "")))
    # What the operator watches most goes first, under today: the rate now, and the net.
    lines = table[:2] + [Content.assemble(
        (f"now {format_amount(e.per_hour_now)}/h", "bold $success"),
        (f" · 1 h {format_amount(e.per_hour_last_hour)} · 24 h "
         f"{format_amount(e.per_hour_last_day)}", ""))]
    if e.profit is not None and e.profit.metered and e.profit.rig.net_per_hour is not None:
        net, c = e.profit.rig.net_per_hour, e.profit.currency
        lines.append(Content.assemble(
            ("net ", "bold"),
            (f"{format_amount(net, c, 4)}/h" + (" gain" if net > 0 else " LOSS" if net < 0
                                                 else ""),
             "bold $success" if net >= 0 else "bold $error")))
    lines += table[2:]
    if e.failures_by_code:
        items = [f"{code} {n:,}" for code, n in e.failures_by_code]
        recent = ("" if e.failure_rate_last_hour is None
                  else f" (last hour {e.failure_rate_last_hour:.1%})")
        lines.append(Content.assemble(("failed: ", "bold $warning"),
                                      (" · ".join(items) + recent, "$warning")))
    else:
        lines.append(Content.styled("failed: none", "$foreground-muted"))
    if e.by_model:
        items = [f"{name if name not in ('', '-') else 'other'} {format_amount(m.amount)} "
                 f"({fmt.jobs(m.jobs)})" for name, m in e.by_model]
        lines.append(Content.assemble(("by model: ", "bold"), (" · ".join(items), "")))
    return lines


class EarningsPanel(SteadyStatic, can_focus=True):
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
        self._shown: Earnings | None = None
        self.border_title = "Earnings"
        self.border_subtitle = "e money"

    def show(self, earnings: Earnings) -> None:
        if earnings == self._shown:
            return
        self._shown = earnings
        self.border_title = f"Earnings ({earnings.currency})"
        self.show_content(Content("\n").join(earnings_lines(earnings)))
