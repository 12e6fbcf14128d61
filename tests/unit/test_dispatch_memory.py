"""What dispatch keeps in memory per command: outputs that wait in an outbox hold their own size."""

from __future__ import annotations

import tracemalloc

import orjson
from prometheus_client import CollectorRegistry

from apiplus.envelope import json_bytes
from apiplus.harness import ManualClock
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.outcome import ResultState
from services.dispatch.record import SendRecord, SendState
from services.dispatch.results import Outputs


def allocated(make: object) -> float:
    """Bytes allocated per object that `make()` returns and that stay alive (1 000 of them)."""
    assert callable(make)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make() for _ in range(1000)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(kept) == 1000
    return grown / 1000


EVENT = {"command_id": "c" * 20, "channel_id": "ch1", "state": "queued", "event_id": "e" * 36}


def test_json_bytes_is_orjson_at_its_own_size() -> None:
    assert json_bytes(EVENT) == orjson.dumps(EVENT)
    assert allocated(lambda: json_bytes(EVENT)) < 400


def test_a_send_record_waiting_in_the_redis_pipeline_holds_its_own_size() -> None:
    record = SendRecord(SendState.DONE, message_id="wamid." + "x" * 40, terminal="sent")
    assert orjson.loads(record.to_json()) == {"state": "done", "message_id": record.message_id, "terminal": "sent"}
    assert allocated(record.to_json) < 400


def test_a_result_waiting_in_an_outbox_holds_well_under_a_kilobyte() -> None:
    outputs = Outputs(None, results_topic="results", retry_topic="retry",  # type: ignore[arg-type]
                      dead_letters={}, metrics=DispatchMetrics(CollectorRegistry()), clock=ManualClock())
    output = outputs.result("cmd-1", "ch1", ResultState.QUEUED)
    assert orjson.loads(output.value or b"")["state"] == "queued"
    assert allocated(lambda: outputs.result("cmd-1", "ch1", ResultState.QUEUED)) < 1024
