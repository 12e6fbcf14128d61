"""The benchmark's own apps run the project's code: they must keep up with it (nothing here times anything)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from apiplus.errors import PermanentError
from apiplus.loopprobe import LoopProbe
from bench.data import ingest_events
from bench.quix_ingest import canonical
from bench.run import loop_line, parse_loop_figures


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


def test_the_latency_phase_reads_the_workers_loop_probe_from_its_metrics() -> None:
    registry = CollectorRegistry()
    probe = LoopProbe(registry)
    probe.observe(0.004, 0.001)
    probe.observe(0.120, 0.020)
    probe.on_gc("start", {"generation": 2})
    probe.on_gc("stop", {"generation": 2})
    figures = parse_loop_figures(generate_latest(registry).decode())
    assert figures["probes"] == 2
    assert figures["probes_within_50ms"] == 1
    assert abs(figures["stalled_running_s"] - 0.020) < 1e-9
    assert abs(figures["stalled_waiting_s"] - 0.100) < 1e-9
    assert figures["gc2_count"] == 1
    line = loop_line(figures)
    assert "20 ms running, 100 ms waiting for a CPU, 1 probes over 50 ms late" in line
    assert "gen2 1 pauses" in line
