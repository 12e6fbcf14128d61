"""The benchmark's own apps run the project's code: they must keep up with it (nothing here times anything)."""

from __future__ import annotations

import pytest

from apiplus.errors import PermanentError
from bench.data import ingest_events
from bench.quix_ingest import canonical


def test_the_quix_ingest_app_turns_every_backlog_record_into_canonical_events_with_a_channel() -> None:
    produced = 0
    for i, (key, value) in enumerate(ingest_events(30, channels=7)):
        events = canonical(value, key, 1764234000000 + i, [])
        assert events, f"record {i} gave no event"
        assert all(event["channel_id"] == key.decode() for event in events)
        produced += len(events)
    assert produced >= 30


def test_the_quix_ingest_app_stops_on_a_record_the_core_refuses() -> None:
    with pytest.raises(PermanentError):
        canonical(b'{"event": "messages.upsert", "instance": "ch1", "data": {"key": 5}}', b"ch1", 0, [])
