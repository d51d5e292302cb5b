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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import ledger
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


def earnings_report(journal: Path, *, fmt: str) -> str:
    with ledger.open_readonly(journal) as conn:
        e = ledger.summarize(conn)
    if fmt == "json":
        return json.dumps(asdict(e), indent=2) + "\n"
    c = e.currency
    lines = [
        f"today        {e.today.amount:12.6f} {c}  {e.today.jobs:6d} jobs",
        f"last 7 days  {e.last_7_days.amount:12.6f} {c}  {e.last_7_days.jobs:6d} jobs",
        f"all time     {e.verified.amount:12.6f} {c}  {e.verified.jobs:6d} jobs",
        f"last hour    {e.last_hour.amount:12.6f} {c}  {e.last_hour.jobs:6d} jobs",
        f"issued {e.issued.amount:.6f} ({e.issued.jobs}) · verified {e.verified.amount:.6f} "
        f"({e.verified.jobs}) · paid {e.paid.amount:.6f} ({e.paid.jobs}) · flagged "
        f"{e.flagged.amount:.6f} ({e.flagged.jobs})",
    ]
    for title, groups in (("by model", e.by_model), ("by slot", e.by_slot),
                          ("by job type", e.by_type), ("by day", e.by_day[:7])):
        if groups:
            lines.append(f"{title}: " + " · ".join(
                f"{k} {t.amount:.6f} ({t.jobs})" for k, t in groups))
    if e.failures_by_code:
        lines.append("failed: " + " · ".join(f"{code} {n}" for code, n in e.failures_by_code))
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
