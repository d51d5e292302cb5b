"""A journal that already holds receipts, as if the miner had earned them: for tests and
benchmarks of what viewers cost with many receipts held."""

from __future__ import annotations

from pathlib import Path

from aitbc_miner.journal import Journal


async def seed_receipts(journal_path: Path, n: int, *, prefix: str = "seeded") -> list[str]:
    """Store ``n`` counted receipts (one per made-up job); returns their ids, oldest first."""
    journal = await Journal.open(journal_path)
    ids = []
    try:
        for i in range(n):
            receipt_id = f"{prefix}-r{i:05d}"
            await journal.store_receipt(
                f"{prefix}-job{i:05d}", {"receipt_id": receipt_id, "units": 1.0, "price": 0.01},
                verdict="valid_pinned", reason="", key_id=None, counted=True)
            ids.append(receipt_id)
    finally:
        await journal.close()
    return ids
