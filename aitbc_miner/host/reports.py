"""``aitbc-miner receipts`` and ``aitbc-miner earnings``: the ledger on a terminal or in a file.

Receipts are verified again on every listing (the pinned key may have been set since),
and the miner key never appears: on 2026-01 a receipt's ``provider`` is the key itself,
so it is shown (and exported) as ``***``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import ledger
from ..energy import EnergyMeter, Tariff, energy_path, profitability
from ..engine.codec import to_jsonable
from ..money import Earnings, Profitability, format_amount
from ..receipts import verify

CSV_FIELDS = ("receipt_id", "job_id", "received_at", "units", "price", "stored_verdict",
              "verdict_now", "reason", "counted", "duplicate")


def receipts_report(journal: Path, *, pinned_key: str | None, miner_id: str,
                    miner_key: str | None, fmt: str) -> str:
    with ledger.open_readonly(journal) as conn:
        rows: list[dict[str, Any]] = []
        for r in ledger.receipts(conn):
            providers = frozenset(p for p in (miner_id, miner_key) if p)
            body = dict(r.body or {})
            check = verify(body, pinned_key=pinned_key, job_id=r.job_id, providers=providers,
                           units=ledger.reported_units(conn, r.job_id))
            if miner_key and body.get("provider") == miner_key:
                body["provider"] = "***"
            rows.append({
                "receipt_id": r.receipt_id, "job_id": r.job_id,
                "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.received_at)),
                "units": r.units, "price": r.price, "stored_verdict": r.verdict,
                "verdict_now": check.verdict.value, "reason": check.reason or r.reason or "",
                "counted": r.counted, "duplicate": r.duplicate, "receipt": body,
            })
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    lines = [f"{'received':<20} {'job':<12} {'units':>9} {'price':>10}  verdict"]
    for row in rows:
        flag = "" if row["counted"] else ("  DUPLICATE, not counted" if row["duplicate"]
                                          else "  NOT COUNTED")
        lines.append(f"{row['received_at']:<20} {row['job_id'][:12]:<12} "
                     f"{_num(row['units']):>9} {_num(row['price']):>10}  {row['verdict_now']}"
                     f"{flag}")
    lines.append(f"{len(rows)} receipt(s)")
    return "\n".join(lines) + "\n"


def earnings_report(journal: Path, *, fmt: str, tariff: Tariff | None = None,
                    now: float | None = None) -> str:
    """The ledger's summary, with profitability when an electricity price is configured
    (energy from the meter the running miner saves next to the journal)."""
    now = time.time() if now is None else now
    with ledger.open_readonly(journal) as conn:
        book = ledger.Book()
        book.read_new(conn)
        e = book.earnings(now, ledger.paid(conn))
    if tariff is not None:
        e = replace(e, profit=profitability(book, EnergyMeter.load(energy_path(journal)),
                                            tariff, now))
    if fmt == "json":
        return json.dumps(to_jsonable(e), indent=2) + "\n"
    return "\n".join(earnings_lines(e)) + "\n"


def earnings_lines(e: Earnings) -> list[str]:
    """``aitbc-miner earnings`` as text: amounts exact to the last nonzero digit shown."""
    c = e.currency
    rows = [("today", e.today), ("last 7 days", e.last_7_days), ("last hour", e.last_hour),
            ("all time", e.verified)]
    lines = [f"{'':<12} {c:>14}  {'jobs':>7}"]
    lines += [f"{label:<12} {format_amount(m.amount):>14}  {m.jobs:>7,}" for label, m in rows]
    lines.append(" · ".join(f"{label} {format_amount(m.amount)} ({m.jobs})" for label, m in (
        ("issued", e.issued), ("verified", e.verified), ("paid", e.paid),
        ("flagged", e.flagged))))
    lines.append(f"{c} per hour: now {format_amount(e.per_hour_now)} · last hour "
                 f"{format_amount(e.per_hour_last_hour)} · last day "
                 f"{format_amount(e.per_hour_last_day)}")
    hours = [f"{time.strftime('%H:00', time.gmtime(at))} {format_amount(m.amount)}"
             for at, m in e.hourly if m.jobs]
    if hours:
        lines.append("hourly (UTC, last 24 h): " + " · ".join(hours))
    for title, groups in (("by model", e.by_model), ("by GPU", e.by_gpu),
                          ("by job type", e.by_type), ("by day", e.by_day[:7])):
        if groups:
            lines.append(f"{title}: " + " · ".join(
                f"{k} {format_amount(t.amount)} ({t.jobs})" for k, t in groups))
    if e.failures_by_code:
        lines.append("failed: " + " · ".join(f"{code} {n}" for code, n in e.failures_by_code))
    if e.failure_rate_last_hour is not None:
        lines.append(f"failure rate, last hour: {e.failure_rate_last_hour:.1%} of "
                     f"{e.finished_last_hour} finished" + "".join(
                         f" · {code} {n}" for code, n in e.failures_last_hour))
    if e.profit is not None:
        lines += profit_lines(e.profit)
    return lines


def profit_lines(p: Profitability) -> list[str]:
    c = p.currency
    rate = "no AITBC rate set" if p.aitbc_rate is None else \
        f"1 AITBC = {format_amount(p.aitbc_rate, c, 2)}"
    if not p.metered:
        return [f"profitability: no GPU power measured in the last hour "
                f"({format_amount(p.price_per_kwh, c, 2)}/kWh, {rate})"]
    lines = [f"profitability over the last {p.window_s / 60:.0f} min measured "
             f"({format_amount(p.price_per_kwh, c, 2)}/kWh, {rate}):",
             f"  {'':<18} {'AITBC':>12} {'energy Wh':>11} {'cost ' + c:>11} "
             f"{'net ' + c + '/h':>12}"]
    for title, group in (("", (p.rig, p.idle)), ("by GPU", p.by_gpu),
                         ("by model", p.by_model)):
        if title and group:
            lines.append(f"  {title}:")
        for line in group:
            net = "-" if line.net_per_hour is None else format_amount(line.net_per_hour)
            lines.append(f"  {line.name[:18]:<18} {format_amount(line.earned):>12} "
                         f"{line.energy_wh:>11,.1f} {format_amount(line.cost):>11} "
                         f"{net:>12}")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
