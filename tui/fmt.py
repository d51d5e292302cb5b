"""Pure formatting for the console: every number with its unit, problems in words.

No Textual widgets here, and no clock: each function that shows an age or a duration
takes ``now`` from the caller (the console's injectable clock), so tests can freeze it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from aitbc_miner.engine.snapshot import format_amount

SPARK = "▁▂▃▄▅▆▇█"
BAR_FULL, BAR_EMPTY = "█", "░"


def duration(seconds: float | None) -> str:
    """``0.3 s``, ``12.4 s``, ``4m05s``, ``2h13m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def uptime(seconds: float) -> str:
    """Whole seconds below a minute (``up 5 s``), then as ``duration``."""
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 60 else duration(seconds)


def age(at: float | None, now: float) -> str:
    """How long ago, in whole seconds below a minute: ``3 s ago``; ``never`` without a time."""
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    return f"{duration(seconds)} ago"


def clock_time(at: float, now: float) -> str:
    """``12:01:03`` today (local time); ``05-12 12:01`` on another day."""
    t, n = time.localtime(at), time.localtime(now)
    if (t.tm_year, t.tm_yday) == (n.tm_year, n.tm_yday):
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%m-%d %H:%M", t)


#: Money is written one way everywhere, the CLI included: ``aitbc_miner.money``.
money = format_amount


def paused_word(mode: str) -> str:
    """What an idle slot that will not claim is called: ``starting`` until the engine
    reports it has started (its slots read paused then), else ``paused``."""
    return "starting" if mode == "starting" else "paused"


def jobs(n: int) -> str:
    return f"{n:,} job" + ("" if n == 1 else "s")


def gib(mb: float | None) -> str:
    return "N/A" if mb is None else f"{mb / 1024:.1f}"


def vram(used_mb: float | None, total_mb: float | None) -> str:
    """``11.2/16.0 GiB``; ``N/A`` parts where NVML could not say."""
    if used_mb is None and total_mb is None:
        return "VRAM N/A"
    return f"{gib(used_mb)}/{gib(total_mb)} GiB"


def bar(fraction: float | None, width: int) -> str:
    if fraction is None or width <= 0:
        return BAR_EMPTY * max(0, width)
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return BAR_FULL * filled + BAR_EMPTY * (width - filled)


def sparkline(values: Sequence[float], width: int, top: float = 100.0) -> str:
    """The last samples, bucketed by max to ``width`` cells (oldest left), padded left."""
    if width <= 0:
        return ""
    if not values:
        return " " * width
    data = list(values)
    if len(data) > width:
        size = len(data) / width
        data = [max(data[int(i * size):max(int(i * size) + 1, int((i + 1) * size))])
                for i in range(width)]
    cells = []
    for value in data:
        frac = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
        cells.append(SPARK[min(len(SPARK) - 1, int(frac * (len(SPARK) - 1) + 0.5))])
    return " " * (width - len(cells)) + "".join(cells)


def pct(value: float | None) -> str:
    return "N/A" if value is None else f"{value:.0f} %"


def celsius(value: float | None) -> str:
    return "N/A" if value is None else f"{value:.0f} °C"


def watts(power: float | None, limit: float | None) -> str:
    if power is None and limit is None:
        return "power N/A"
    p = "N/A" if power is None else f"{power:.0f}"
    return f"{p}/{limit:.0f} W" if limit is not None else f"{p} W"


def short_id(job_id: str | None, n: int = 8) -> str:
    if not job_id:
        return "-"
    return job_id if len(job_id) <= n else job_id[:n]


def short_gpu_name(name: str) -> str:
    """``NVIDIA GeForce RTX 4060 Ti`` -> ``RTX 4060 Ti`` (the SIMULATED prefix is a tag)."""
    for prefix in ("SIMULATED ", "NVIDIA ", "GeForce "):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def host_of(url: str) -> str:
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    return url.rstrip("/")


def progress(pairs: Iterable[tuple[str, Any]]) -> str:
    """A job's progress pairs as one cell: ``41.2 tok/s · 512 tok``, ``45 %``."""
    p = dict(pairs)
    parts: list[str] = []
    if isinstance(p.get("tokens_per_s"), int | float):
        parts.append(f"{p['tokens_per_s']:.1f} tok/s")
    if isinstance(p.get("tokens"), int | float):
        parts.append(f"{p['tokens']:,.0f} tok")
    if p.get("pull"):
        parts.append(f"pull {p['pull']}")
    if isinstance(p.get("pct"), int | float):
        parts.append(f"{p['pct']:.0f} %")
    return " · ".join(parts) if parts else "-"


UNIT_NAMES = {"gpu_seconds": "GPU s", "cpu_seconds": "CPU s", "seconds": "s", "tokens": "tok"}


def units(amount: float | None, unit_type: str | None) -> str:
    if amount is None:
        return "-"
    unit = UNIT_NAMES.get(unit_type or "", unit_type or "")
    return f"{amount:,.2f} {unit}".rstrip()


VERDICTS = {
    "valid_pinned": "✓ pinned",
    "valid_unpinned": "✓ unpinned key",
    "invalid_signature": "✗ INVALID",
    "mismatch": "✗ MISMATCH",
    "malformed": "✗ MALFORMED",
}


def verdict(verdict_value: str, counted: bool, duplicate: bool, reason: str = "") -> str:
    """``✓ pinned``, ``✗ INVALID``, ``✗ mismatch (price)``, ``✗ DUPLICATE``; a duplicate
    the ledger counts (a resent job's only receipt) says so: ``✓ counted (dup)``."""
    if duplicate:
        return "✓ counted (dup)" if counted else "✗ DUPLICATE"
    text = VERDICTS.get(verdict_value, f"? {verdict_value}")
    if verdict_value == "mismatch" and reason:
        what = reason.split(":")[0].split()[-1] if reason.split(":")[0].split() else reason
        text = f"✗ MISMATCH ({what})"
    if not counted and text.startswith("✓"):
        text = "✗ NOT COUNTED"
    return text


def verdict_ok(verdict_value: str, counted: bool, duplicate: bool) -> bool:
    return counted and not duplicate and verdict_value.startswith("valid")


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LEVEL_TAGS = {"DEBUG": "DEBUG", "INFO": "INFO ", "WARNING": "WARN ", "ERROR": "ERROR",
              "CRITICAL": "ERROR"}


def display_level(event: Any) -> str:
    """The level the console shows an event at: the engine's ``severity()`` (a failed job
    is a WARNING there, an ERROR when the rig is at fault, never INFO)."""
    return str(event.severity()).upper()


def level_rank(level: str) -> int:
    level = level.upper()
    if level == "CRITICAL":
        level = "ERROR"
    return LEVELS.index(level) if level in LEVELS else 1
