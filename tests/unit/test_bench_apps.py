"""The benchmark's own apps run the project's code: they must keep up with it (nothing here times anything)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from apiplus.errors import PermanentError
from apiplus.loopprobe import LoopProbe
from bench.data import ingest_events
from bench.quix_ingest import canonical
from bench.run import STAGE_PARTS, by_second, loop_line, parse_loop_figures, stage_line, stage_split
from bench.stacktop import summarise


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
    probe.observe(0.0004, 0.0001)
    probe.observe(0.004, 0.001)
    probe.observe(0.007, 0.001)
    probe.observe(0.120, 0.020)
    probe.on_gc("start", {"generation": 2})
    probe.on_gc("stop", {"generation": 2})
    figures = parse_loop_figures(generate_latest(registry).decode())
    assert figures["probes"] == 4
    assert figures["probes_within_50ms"] == 3
    assert (figures["probes_within_1ms"], figures["probes_within_5ms"], figures["probes_within_10ms"]) == (1, 2, 3)
    assert abs(figures["stalled_running_s"] - 0.020) < 1e-9
    assert abs(figures["stalled_waiting_s"] - 0.100) < 1e-9
    assert figures["gc2_count"] == 1
    line = loop_line(figures)
    assert "20 ms running, 100 ms waiting for a CPU, 1 probes over 50 ms late, 25%/50%/75% of its probes" in line
    assert "gen2 1 pauses" in line


def test_the_latency_phase_splits_the_slowest_commands_by_stage() -> None:
    trace = "\n".join(f"c{i}\t{100 + i}.000\t{100 + i}.010\t{100 + i}.011\t{100 + i}.013\t{100 + i}.013"
                      for i in range(199))
    trace += "\nslow\t500.000\t500.200\t500.201\t500.203\t500.203\nnever-received\t1\t2\t3\t4\t5"
    received = {**{f"c{i}": 100 + i + 0.015 for i in range(199)}, "slow": 500.205}
    split = stage_split(trace, received)
    assert split["commands"] == 200
    parts = split["parts"]
    assert list(parts) == list(STAGE_PARTS)
    assert abs(parts["produced -> intake"]["p50_ms"] - 10) < 0.01
    assert abs(parts["produced -> intake"]["slowest_1pct_mean_ms"] - 105) < 0.01  # the slow one (200) and a c (10)
    assert abs(parts["request -> received"]["p50_ms"] - 2) < 0.01
    assert "produced -> intake 105.0" in stage_line(split)
    assert stage_split("", received) == {}
    # Commands taken in every second: 199 pauses, the longest before the slow one (500.200 - 298.010 s).
    assert split["intake_pauses"]["count"] == 199
    assert abs(split["intake_pauses"]["longest_ms"] - 202_190) < 1
    assert split["intake_pauses"]["slowest_1pct_after_one_pct"] == 100  # both of the slowest two follow a pause


def test_intake_pauses_count_gaps_over_20_ms_and_the_slow_commands_right_after_them() -> None:
    # 300 commands taken in 1 ms apart, a 50 ms pause, then 100 more 1 ms apart; 2 ms from intake to receipt,
    # except the first 4 after the pause (held up by it: produced during it, 30 ms end to end).
    lines, received = [], {}
    at = 1000.0
    for i in range(400):
        at += 0.050 if i == 300 else 0.001
        late = 300 <= i < 304
        produced = at - (0.028 if late else 0.001)
        lines.append(f"c{i}\t{produced:.6f}\t{at:.6f}\t{at:.6f}\t{at:.6f}\t{at:.6f}")
        received[f"c{i}"] = at + 0.001
    split = stage_split("\n".join(lines), received)
    pauses = split["intake_pauses"]
    assert pauses["count"] == 1
    assert abs(pauses["longest_ms"] - 50) < 0.01
    assert pauses["slowest_1pct_after_one_pct"] == 100  # the slowest 4 of 400: c300..c303, 0-3 ms after it
    assert "intake paused over 20 ms 1 times (longest 50 ms), 100% of the slowest 1%" in stage_line(split)


def test_the_stack_summary_counts_own_samples_by_innermost_frame_and_every_frame_once_per_stack() -> None:
    stacks = [
        "run (asyncio/runners.py:118);deliver (services/dispatch/delivery.py:105);"
        "send (aiohttp/client.py:500);deliver (services/dispatch/delivery.py:120) 3\n",
        "run (asyncio/runners.py:118);_flush (apiplus/redisio.py:80) 1\n",
        "not a stack line\n",
    ]
    out = summarise(stacks, top=10)
    assert out[0] == "4 samples"
    by_package = out[out.index("by package (innermost frame):") + 1:out.index("top 10 by own samples:")]
    assert by_package == [" 75.0%  services", " 25.0%  apiplus", ""]
    own = out[out.index("top 10 by own samples:") + 1:out.index("top 10 anywhere on the stack:") - 1]
    assert own == [" 75.0%  deliver (services/dispatch/delivery.py)", " 25.0%  _flush (apiplus/redisio.py)"]
    anywhere = out[out.index("top 10 anywhere on the stack:") + 1:]
    assert anywhere[0] == "100.0%  run (asyncio/runners.py)"
    assert " 75.0%  deliver (services/dispatch/delivery.py)" in anywhere  # twice on one stack, counted once


def test_latency_samples_are_grouped_by_the_second_of_the_run_they_were_sent_in() -> None:
    assert by_second(100.0, [(100.2, 5.0), (100.9, 7.0), (101.0, 3.0), (103.5, 9.0)]) == {
        0: [5.0, 7.0], 1: [3.0], 3: [9.0]}
