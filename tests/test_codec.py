"""Snapshots and events survive the trip through JSON (the control socket's encoding)."""

from __future__ import annotations

import json

from aitbc_miner.engine.codec import event_from_json, snapshot_from_json, to_jsonable
from tui.fake import sample_events, sample_snapshot


def test_a_busy_snapshot_round_trips_through_json() -> None:
    snap = sample_snapshot()
    assert snapshot_from_json(json.loads(json.dumps(to_jsonable(snap)))) == snap


def test_events_round_trip_and_an_unknown_one_is_skipped() -> None:
    events = sample_events()
    decoded = [event_from_json(json.loads(json.dumps(to_jsonable(e)))) for e in events]
    assert decoded == list(events)
    assert event_from_json({"event": "from_a_newer_agent", "at": 1.0}) is None
