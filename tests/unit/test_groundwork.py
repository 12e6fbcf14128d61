"""The Kafka groundwork and the harness itself: the fakes keep Kafka's semantics the loops rely on."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    ProducerFenced,
)
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from apiplus.backoff import Backoff
from apiplus.dlq import DeadLetterWriter, SourceRecord
from apiplus.errors import ErrorCode, PermanentError
from apiplus.harness import ClockStuck, FakeProducer, Harness, ManualClock
from apiplus.health import Readiness
from apiplus.jsonlog import COORDINATOR_LOGGER, StartupCoordinatorFilter
from apiplus.kafka import load_table
from apiplus.runtime import run_components, tune_gc
from apiplus.table import TopicTable
from apiplus.topics import DISPATCH_COMMANDS, DISPATCH_RETRY, INGEST_RAW, dead_letter_topic

TP = TopicPartition("t", 0)


class _Abort(Exception):
    pass


async def _aborted(producer: FakeProducer, work: Callable[[], Awaitable[object]]) -> None:
    """Run `work` in a transaction that the block then aborts by raising."""
    try:
        async with producer.transaction():
            await work()
            raise _Abort
    except _Abort:
        pass


def test_backoff_doubles_from_first_to_the_cap_and_retry_after_wins() -> None:
    policy = Backoff(first=0.5, cap=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(10_000) == 3.0
    assert policy.delay(2, retry_after=7.5) == 7.5
    with pytest.raises(ValueError, match="first"):
        Backoff(first=0, cap=1)


def test_dead_letter_topics_come_from_the_topic_table() -> None:
    assert dead_letter_topic(INGEST_RAW.name) == INGEST_RAW.dlq == "apiplus.ingest.raw.v1.dlq"
    assert dead_letter_topic(DISPATCH_RETRY.name) == DISPATCH_COMMANDS.dlq
    assert dead_letter_topic("test.x") == "test.x.dlq"


async def test_read_committed_sees_a_transaction_only_once_committed() -> None:
    h = Harness()
    h.broker.create_topic("t")
    producer = h.kafka.transactional_producer("tx")
    await producer.start()
    reader = h.kafka.reader()
    reader.assign([TP])
    async with producer.transaction():
        await producer.send("t", b"1", partition=0)
        assert await reader.getmany() == {}
        assert h.broker.last_stable_offset(TP) == 0
    batch = await reader.getmany()
    assert [r.value for r in batch[TP]] == [b"1"]
    assert h.broker.high_watermark(TP) == 2  # the commit marker takes an offset


async def test_aborted_records_are_skipped_and_the_reader_moves_past_them() -> None:
    h = Harness()
    h.broker.create_topic("t")
    producer = h.kafka.transactional_producer("tx")
    await producer.start()
    await _aborted(producer, lambda: producer.send("t", b"lost", partition=0))
    h.broker.produce("t", b"kept", partition=0)
    reader = h.kafka.reader()
    reader.assign([TP])
    assert [r.value for r in (await reader.getmany())[TP]] == [b"kept"]
    assert await reader.position(TP) == 3
    assert [r.value for r in h.broker.records("t", committed=False)] == [b"lost", b"kept"]


async def test_a_new_producer_with_the_same_id_fences_the_old_and_aborts_its_transaction() -> None:
    h = Harness()
    h.broker.create_topic("t")
    old = h.kafka.transactional_producer("tx")
    await old.start()
    await old.begin_transaction()
    await old.send("t", b"zombie", partition=0)
    new = h.kafka.transactional_producer("tx")
    await new.start()
    assert h.broker.records("t") == []
    assert h.broker.last_stable_offset(TP) == h.broker.high_watermark(TP)  # nothing open any more
    with pytest.raises(ProducerFenced):
        await old.commit_transaction()
    with pytest.raises(ProducerFenced):
        await old.begin_transaction()


async def test_offsets_sent_to_a_transaction_commit_with_it() -> None:
    h = Harness()
    h.broker.create_topic("t")
    producer = h.kafka.transactional_producer("tx")
    await producer.start()
    await _aborted(producer, lambda: producer.send_offsets_to_transaction({TP: 5}, "g"))
    assert h.broker.committed("g", TP) is None
    async with producer.transaction():
        await producer.send_offsets_to_transaction({TP: 7}, "g")
    assert h.broker.committed("g", TP) == 7


async def test_an_expelled_member_cannot_commit_and_the_others_take_its_partitions() -> None:
    h = Harness()
    h.broker.create_topic("t", partitions=2)
    a, b = h.kafka.group_consumer("g"), h.kafka.group_consumer("g")
    a.subscribe(topics=["t"])
    await a.getmany()
    b.subscribe(topics=["t"])
    await a.getmany()
    await b.getmany()
    assert (a.assignment(), b.assignment()) == ({TopicPartition("t", 0)}, {TopicPartition("t", 1)})
    h.broker.expel(a)
    await b.getmany()
    assert b.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
    with pytest.raises(CommitFailedError):
        await a.commit({TopicPartition("t", 0): 1})
    await b.commit({TopicPartition("t", 0): 1})
    assert h.broker.committed("g", TopicPartition("t", 0)) == 1


async def test_manual_clock_fires_timers_in_order_and_wait_returns_on_the_event() -> None:
    clock = ManualClock(start=1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.time()))

    tasks = [asyncio.ensure_future(sleeper("late", 5)), asyncio.ensure_future(sleeper("early", 2))]
    await clock.advance(1)
    assert woke == []
    await clock.advance(10)
    assert woke == [("early", 1002.0), ("late", 1005.0)]
    assert clock.time() == 1011.0
    await asyncio.gather(*tasks)
    event = asyncio.Event()
    waiter = asyncio.ensure_future(clock.wait(event, 30))
    await clock.settle()
    event.set()
    assert await waiter is True
    assert await clock.run(clock.wait(asyncio.Event(), 30)) is False
    assert clock.monotonic() == 41.0


async def test_manual_clock_run_reports_work_that_no_timer_will_release() -> None:
    clock = ManualClock()
    with pytest.raises(ClockStuck):
        await clock.run(asyncio.Event().wait())


async def test_compacted_table_keeps_the_latest_value_and_honours_tombstones() -> None:
    h = Harness()
    h.broker.create_topic("c")
    for key, value in ((b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"b", None)):
        h.broker.produce("c", value, key=key, partition=0)
    assert await load_table(h.kafka, "c", 0) == {"a": 3}


async def test_topic_table_loads_follows_and_counts_refused_rows() -> None:
    h = Harness()
    h.broker.create_topic("reg", partitions=2)
    h.broker.produce("reg", b'{"ok": true}', key=b"a")
    h.broker.produce("reg", b"not json", key=b"b")
    h.broker.produce("reg", b'{"ok": false}', key=b"c")
    refused: list[int] = []
    updates: list[str] = []
    table = TopicTable(h.kafka, "reg", accept=lambda row: bool(row.get("ok")), on_rejected=lambda: refused.append(1),
                       on_update=lambda key, _row: updates.append(key), clock=h.clock)
    task = asyncio.ensure_future(table.run())
    await h.clock.settle()
    assert table.loaded.is_set()
    assert table.rows == {"a": {"ok": True}}
    assert len(refused) == 2
    h.broker.produce("reg", None, key=b"a")
    await h.clock.settle()
    assert table.rows == {}
    assert updates == ["a", "a"]
    table.stop()
    await task


async def test_dead_letter_writer_writes_inside_the_caller_s_transaction() -> None:
    h = Harness()
    h.broker.create_topic("cmds.dlq")
    codes: list[str] = []
    writer = DeadLetterWriter("apiplus-test", on_written=codes.append, clock=h.clock)
    producer = h.kafka.transactional_producer("tx")
    await producer.start()
    source = SourceRecord("cmds", 3, 42, b"ch-1", b'{"token": "SECRET-1", "text": "hi"}')
    error = PermanentError(ErrorCode.RETRIES_EXHAUSTED, "provider unavailable")
    await _aborted(producer, lambda: writer.write(producer, source, error))
    assert h.broker.records("cmds.dlq") == []
    async with producer.transaction():
        await writer.write(producer, source, error)
    [record] = h.broker.records("cmds.dlq")
    letter = orjson.loads(record.value)
    assert record.key == b"ch-1"
    assert letter["source"] == {"topic": "cmds", "partition": 3, "offset": 42}
    assert letter["error"]["code"] == "retries_exhausted"
    assert "SECRET-1" not in record.value.decode()
    assert codes == ["retries_exhausted", "retries_exhausted"]


async def test_readiness_sets_the_ready_gauge() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("apiplus_test_ready", "ready", registry=registry)
    checks = {"kafka": True, "redis": False}

    async def check() -> dict[str, bool]:
        return dict(checks)

    readiness = Readiness(check, gauge)
    assert await readiness() == checks
    assert registry.get_sample_value("apiplus_test_ready") == 0
    checks["redis"] = True
    await readiness()
    assert registry.get_sample_value("apiplus_test_ready") == 1


def _coordinator_failure(error: Exception) -> logging.LogRecord:
    return logging.LogRecord(COORDINATOR_LOGGER, logging.ERROR, __file__, 1, "Group Coordinator Request failed: %s",
                             (error,), None)


def test_coordinator_not_available_at_start_is_quiet_and_real_errors_stay_loud() -> None:
    now = [0.0]
    quiet = StartupCoordinatorFilter(grace=60, clock=lambda: now[0])
    benign = _coordinator_failure(GroupCoordinatorNotAvailableError())
    assert quiet.filter(benign) is False  # aiokafka logs at WARNING by default: dropped
    assert benign.levelno == logging.DEBUG
    refused = _coordinator_failure(GroupAuthorizationFailedError())
    assert quiet.filter(refused) is True
    assert refused.levelno == logging.ERROR
    now[0] = 61.0
    late = _coordinator_failure(GroupCoordinatorNotAvailableError())
    assert quiet.filter(late) is True
    assert late.levelno == logging.ERROR
    other = logging.LogRecord(COORDINATOR_LOGGER, logging.ERROR, __file__, 1, "Unexpected error", (), None)
    assert quiet.filter(other) is True


def test_every_error_code_the_services_write_is_in_the_closed_set() -> None:
    root = Path(__file__).resolve().parents[2] / "services"
    written = {
        code
        for path in root.rglob("*.py")
        for code in re.findall(r'"code":\s*"([a-z_]+)"', path.read_text())
    }
    named = {name for path in root.rglob("*.py") for name in re.findall(r"ErrorCode\.([A-Z_]+)", path.read_text())}
    assert written or named, "the scan found no error codes: the pattern is out of date"
    assert written <= {str(code) for code in ErrorCode}, written - {str(code) for code in ErrorCode}
    assert named <= set(ErrorCode.__members__), named - set(ErrorCode.__members__)


class _OneShot:
    """A component that runs until told to finish."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()

    async def run(self) -> None:
        await self.finish.wait()

    def stop(self) -> None:
        self.finish.set()


async def test_a_running_worker_keeps_its_ready_gauge_current_and_zero_once_stopped() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("apiplus_test_ready", "ready", registry=registry)
    component = _OneShot()

    async def ready() -> dict[str, bool]:
        return {"kafka": True}

    worker = asyncio.ensure_future(run_components([component], registry=registry, ready=ready,
                                                  http_host="127.0.0.1", http_port=0, ready_gauge=gauge))
    for _ in range(200):
        if registry.get_sample_value("apiplus_test_ready") == 1:
            break
        await asyncio.sleep(0.01)
    assert registry.get_sample_value("apiplus_test_ready") == 1
    component.finish.set()
    await worker
    assert registry.get_sample_value("apiplus_test_ready") == 0


def test_tune_gc_freezes_what_start_up_allocated_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (50_000, 20, 20)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
