"""Formatting: every number with its unit, problems in words."""

from __future__ import annotations

from tui import fmt
from tui.widgets.events import LogFilter


def test_durations_and_ages_read_plainly() -> None:
    assert [fmt.duration(s) for s in (0.34, 12.4, 245, 7980, 90_000)] == \
        ["0.3 s", "12 s", "4m05s", "2h13m", "1d01h"]
    assert fmt.age(97.0, 100.0) == "3 s ago" and fmt.age(None, 1.0) == "never"
    assert fmt.uptime(5.4) == "5 s" and fmt.uptime(7980) == "2h13m"


def test_gpu_numbers_carry_units_and_say_n_a() -> None:
    assert fmt.vram(11_469, 16_380) == "11.2/16.0 GiB"
    assert fmt.vram(None, 16_380) == "N/A/16.0 GiB" and fmt.vram(None, None) == "VRAM N/A"
    assert fmt.watts(142, 165) == "142/165 W" and fmt.celsius(None) == "N/A"
    assert fmt.short_gpu_name("SIMULATED NVIDIA GeForce RTX 4060 Ti") == "RTX 4060 Ti"


def test_sparkline_keeps_the_newest_samples_at_the_right() -> None:
    assert fmt.sparkline([], 4) == "    "
    assert fmt.sparkline([0, 100], 4) == "  ▁█"
    assert fmt.sparkline([0] * 10 + [100] * 10, 4) == "▁▁██"  # bucketed by max
    assert fmt.bar(0.5, 10) == "█████░░░░░" and fmt.bar(None, 3) == "░░░"


def test_receipt_verdicts_in_words() -> None:
    assert fmt.verdict("valid_pinned", True, False) == "✓ pinned"
    assert fmt.verdict("valid_unpinned", True, False) == "✓ unpinned key"
    assert fmt.verdict("invalid_signature", False, False) == "✗ INVALID"
    assert fmt.verdict("mismatch", False, False, "price: 0.2 != 0.3") == "✗ MISMATCH (price)"
    assert fmt.verdict("valid_pinned", False, True) == "✗ DUPLICATE"
    assert fmt.units(11.85, "gpu_seconds") == "11.85 GPU s"
    assert fmt.progress((("tokens", 512), ("tokens_per_s", 41.23))) == "41.2 tok/s · 512 tok"


def test_log_filter_words() -> None:
    assert LogFilter.parse("") == LogFilter()
    assert LogFilter.parse("warn") == LogFilter("WARNING", "")
    assert LogFilter.parse("3f2a") == LogFilter("DEBUG", "3f2a")  # a job's log lines too
    assert LogFilter.parse("error job:3f2a") == LogFilter("ERROR", "3f2a")
