"""The transactional processor driven by the in-memory harness: no Kafka, no Redis, virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from apiplus.backoff import Backoff
from apiplus.errors import ErrorCode, PermanentError, TransientError
from apiplus.harness import Harness, SenderDied
from apiplus.metrics import WorkerMetrics
from apiplus.processor import Output, PartitionState, ProcessorConfig, TransactionalProcessor

IN, OUT, STATE, GROUP = "in", "out", "state", "g"
P0 = TopicPartition(IN, 0)


class CountingHandler:
    """Counts records per key in the partition's state and emits the running count.

    Values steer it: b"bad" is refused (PermanentError), b"boom" raises a bug, b"flaky" fails
    transiently `flaky` times in a row before succeeding.
    """

    def __init__(self, flaky: int = 0) -> None:
        self.flaky = flaky
        self.prepared: list[list[int]] = []
        self.ticks: list[tuple[int, float]] = []

    async def prepare(self, records: Sequence[Any]) -> None:
        self.prepared.append([r.offset for r in records])

    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        if record.value == b"bad":
            raise PermanentError(ErrorCode.INVALID_VALUE, "refused on purpose", field="value")
        if record.value == b"boom":
            raise ZeroDivisionError("a bug")
        if record.value == b"flaky" and self.flaky > 0:
            self.flaky -= 1
            raise TransientError("dependency down", retry_after=None)
        key = record.key.decode()
        count = state.get(key, 0) + 1
        state.put(key, count)
        return [Output(OUT, orjson.dumps({"key": key, "count": count, "offset": record.offset}), key=record.key)]

    async def tick(self, state: PartitionState, now: float) -> Sequence[Output]:
        self.ticks.append((state.partition, now))
        state.put("ticks", state.get("ticks", 0) + 1)
        return [Output(OUT, orjson.dumps({"tick": now}), key=b"tick", partition=state.partition)]


def _harness(partitions: int = 1) -> Harness:
    h = Harness()
    h.broker.create_topic(IN, partitions)
    for topic in (OUT, STATE, IN + ".dlq"):
        h.broker.create_topic(topic, partitions)
    return h


def _processor(h: Harness, handler: CountingHandler, *, registry: CollectorRegistry | None = None,
               **config: Any) -> TransactionalProcessor:
    settings: dict[str, Any] = {"app": "test", "group_id": GROUP, "topics": [IN], "changelog_topic": STATE,
                                "tick_interval": 60.0, **config}
    metrics = WorkerMetrics(registry or CollectorRegistry(), "test").stage("s")
    return TransactionalProcessor(ProcessorConfig(**settings), h.kafka, handler, metrics, clock=h.clock)


async def _first_record_done(h: Harness, handler: CountingHandler | None = None,
                             **config: Any) -> TransactionalProcessor:
    """Record "a" of key k written, and a started processor that has handled it."""
    h.broker.produce(IN, b"a", key=b"k", partition=0)
    p = _processor(h, handler or CountingHandler(), **config)
    await p.start()
    await p.step()
    return p


def _outputs(h: Harness, committed: bool = True) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in h.broker.records(OUT, committed=committed) if r.key != b"tick"]


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_batch_commits_outputs_state_and_offsets_together() -> None:
    h = _harness()
    for value in (b"a", b"b", b"c"):
        h.broker.produce(IN, value, key=b"k", partition=0)
    handler = CountingHandler()
    p = _processor(h, handler)
    await p.start()
    await p.step()
    assert [o["count"] for o in _outputs(h)] == [1, 2, 3]
    assert h.broker.committed(GROUP, P0) == 3
    changelog = h.broker.records(STATE)
    assert [(r.key, orjson.loads(r.value)) for r in changelog if r.key == b"k"] == [(b"k", 3)]
    assert handler.prepared == [[0, 1, 2]]


async def test_restart_resumes_after_the_committed_offset_with_restored_state() -> None:
    h = _harness()
    first = await _first_record_done(h)
    await first.close()
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    second = _processor(h, CountingHandler())
    await second.start()
    await second.step()
    assert [o["count"] for o in _outputs(h)] == [1, 2]  # count 2: state came back from the changelog
    assert [o["offset"] for o in _outputs(h)] == [0, 1]  # offset 0 not handled twice


async def test_transient_errors_are_retried_in_place_with_backoff() -> None:
    h = _harness()
    h.broker.produce(IN, b"flaky", key=b"k", partition=0)
    registry = CollectorRegistry()
    p = _processor(h, CountingHandler(flaky=2), registry=registry, backoff=Backoff(first=0.5, cap=10))
    await p.start()
    await h.clock.run(p.step())
    assert h.clock.monotonic() == pytest.approx(0.5 + 1.0)  # two retries: first, then doubled
    assert [o["count"] for o in _outputs(h)] == [1]
    assert _sample(registry, "apiplus_test_retries_total", stage="s") == 2
    assert _sample(registry, "apiplus_test_transaction_aborts_total", stage="s") == 0


async def test_a_batch_whose_retries_run_out_is_aborted_and_redone_without_duplicates() -> None:
    h = _harness()
    h.broker.produce(IN, b"a", key=b"k", partition=0)
    h.broker.produce(IN, b"flaky", key=b"k", partition=0)
    registry = CollectorRegistry()
    handler = CountingHandler(flaky=4)
    p = _processor(h, handler, registry=registry, transient_attempts=2, backoff=Backoff(first=1, cap=8))
    await p.start()
    await h.clock.run(p.step())
    # Each batch attempt: "a" handled, "flaky" fails, retried after 1 s, fails again: aborted. Batch
    # backoff 1 s, then 2 s; the third attempt's "flaky" succeeds at once.
    assert h.clock.monotonic() == pytest.approx(1 + 1 + 1 + 2)
    assert _sample(registry, "apiplus_test_transaction_aborts_total", stage="s") == 2
    assert [o["count"] for o in _outputs(h)] == [1, 2]  # the state of aborted attempts was rolled back
    # A batch's outputs are produced once all its records are handled (one batch per output partition),
    # so the attempts that failed mid-batch wrote nothing, not even aborted records.
    assert len(_outputs(h, committed=False)) == 1 + 1
    assert handler.prepared == [[0, 1]] * 3
    assert h.broker.committed(GROUP, P0) == 2


# SenderDied: aiokafka's sender task dies when a connection drops during a coordinator lookup (a broker
# going down), and that producer fails every later transaction: the worker must not stop or stall on it.
@pytest.mark.parametrize("error", [KafkaConnectionError("broker went away"),
                                   SenderDied("Unexpected error during batch delivery")])
async def test_a_failed_commit_aborts_the_batch_and_the_retry_writes_it_once(error: Exception) -> None:
    h = _harness()
    p = await _first_record_done(h)
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    h.broker.fail_next("commit", error)
    await h.clock.run(p.step())
    assert [o["count"] for o in _outputs(h)] == [1, 2]
    assert h.broker.committed(GROUP, P0) == h.broker.records(IN)[-1].offset + 1
    h.broker.produce(IN, b"c", key=b"k", partition=0)
    await h.clock.run(p.step())
    assert [o["count"] for o in _outputs(h)] == [1, 2, 3]
    assert p.partitions == [P0]


async def test_bad_input_is_dead_lettered_in_the_same_transaction_and_the_rest_goes_on() -> None:
    h = _harness()
    for value in (b"a", b"bad", b"boom", b"b"):
        h.broker.produce(IN, value, key=b"k", partition=0)
    registry = CollectorRegistry()
    p = _processor(h, CountingHandler(), registry=registry)
    await p.start()
    await p.step()
    assert [o["count"] for o in _outputs(h)] == [1, 2]
    letters = [orjson.loads(r.value) for r in h.broker.records(IN + ".dlq")]
    codes = [(d["source"]["offset"], d["error"]["code"]) for d in letters]
    assert codes == [(1, "invalid_value"), (2, "internal_error")]
    assert letters[0]["source"] == {"topic": IN, "partition": 0, "offset": 1}
    assert _sample(registry, "apiplus_test_records_total", stage="s", outcome="dead_lettered") == 2
    assert _sample(registry, "apiplus_test_dead_letters_total", stage="s", code="invalid_value") == 1


class TurnsBadHandler(CountingHandler):
    """b"flaky" fails transiently once, then is refused for good on the retry; b"shaky" fails transiently
    once, then hits a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[int, int] = {}

    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        calls = self.calls[record.offset] = self.calls.get(record.offset, 0) + 1
        if record.value in (b"flaky", b"shaky") and calls == 1:
            raise TransientError("dependency down", retry_after=None)
        if record.value == b"flaky":
            raise PermanentError(ErrorCode.INVALID_VALUE, "refused on the retry", field="value")
        if record.value == b"shaky":
            raise KeyError("a bug on the retry")
        return await super().handle(record, state)


async def test_a_retried_record_that_then_fails_for_good_is_dead_lettered_once() -> None:
    h = _harness()
    for value in (b"a", b"flaky", b"shaky", b"b"):
        h.broker.produce(IN, value, key=b"k", partition=0)
    registry = CollectorRegistry()
    handler = TurnsBadHandler()
    p = _processor(h, handler, registry=registry, backoff=Backoff(first=0.5, cap=10))
    await p.start()
    await h.clock.run(p.step())
    assert [o["count"] for o in _outputs(h)] == [1, 2]
    letters = [orjson.loads(r.value) for r in h.broker.records(IN + ".dlq")]
    assert [(d["source"]["offset"], d["error"]["code"]) for d in letters] == [(1, "invalid_value"),
                                                                              (2, "internal_error")]
    assert handler.calls == {0: 1, 1: 2, 2: 2, 3: 1}  # each failing record: its attempt and one retry
    assert _sample(registry, "apiplus_test_retries_total", stage="s") == 2
    assert _sample(registry, "apiplus_test_records_total", stage="s", outcome="dead_lettered") == 2
    assert _sample(registry, "apiplus_test_records_total", stage="s", outcome="ok") == 2
    assert h.broker.committed(GROUP, P0) == 4


async def test_a_zombie_owner_is_fenced_and_its_batch_never_becomes_visible() -> None:
    h = _harness()
    old = await _first_record_done(h)
    new = _processor(h, CountingHandler())
    zombie_consumer = h.kafka.consumers[0]
    h.broker.expel(zombie_consumer)  # session timeout: `old` does not know it lost the partition
    await new.start()
    await new.step()  # takes the partition: init_transactions fences old's producer
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    await old.step()  # the zombie fetches b and cannot even begin a transaction
    assert old.partitions == []  # it gave the partition up
    await new.step()
    assert [o["count"] for o in _outputs(h, committed=False)] == [1, 2]  # nothing written by the zombie
    assert h.broker.committed(GROUP, P0) == 2


async def test_a_crashed_owner_s_open_transaction_is_aborted_by_the_next_owner() -> None:
    h = _harness()
    await _first_record_done(h)
    producer = h.kafka.producers[-1]
    await producer.begin_transaction()  # kill -9 mid-batch: a written but uncommitted output
    delivery = await producer.send(OUT, b'{"key": "k", "count": 99, "offset": -1}', key=b"k", partition=0)
    producer.crash()
    h.broker.expel(h.kafka.consumers[0])
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    # the open transaction holds read_committed readers back at its first record
    assert h.broker.last_stable_offset(TopicPartition(OUT, 0)) == (await delivery).offset
    second = _processor(h, CountingHandler())
    await second.start()
    await second.step()
    assert [o["count"] for o in _outputs(h)] == [1, 2]


async def test_partitions_move_between_members_and_state_follows_them() -> None:
    h = _harness(partitions=2)
    for partition in (0, 1):
        h.broker.produce(IN, b"a", key=f"k{partition}".encode(), partition=partition)
    a, b = _processor(h, CountingHandler()), _processor(h, CountingHandler())
    await a.start()
    await a.step()
    assert a.partitions == [TopicPartition(IN, 0), TopicPartition(IN, 1)]
    await b.start()
    await a.step()  # eager rebalance: a is revoked both, then gets its share
    await b.step()
    assert (a.partitions, b.partitions) == ([TopicPartition(IN, 0)], [TopicPartition(IN, 1)])
    h.broker.produce(IN, b"b", key=b"k1", partition=1)
    await b.step()
    counts = {(o["key"], o["count"]) for o in _outputs(h)}
    assert counts == {("k0", 1), ("k1", 1), ("k1", 2)}


async def test_ticks_run_on_the_interval_in_a_transaction_per_partition() -> None:
    h = _harness(partitions=2)
    handler = CountingHandler()
    p = _processor(h, handler, tick_interval=5.0)
    await p.start()
    await p.step()  # assigned during this poll; the first tick runs at once
    start = h.clock.time()
    await h.clock.advance(4.0)
    await p.step()
    assert handler.ticks == [(0, start), (1, start)]
    await h.clock.advance(1.0)
    await p.step()
    assert handler.ticks[2:] == [(0, start + 5), (1, start + 5)]
    ticks = [r for r in h.broker.records(OUT) if r.key == b"tick"]
    assert len(ticks) == 4
    assert {r.key: orjson.loads(r.value) for r in h.broker.records(STATE) if r.partition == 0} == {b"ticks": 2}


async def test_a_tick_that_fails_is_rolled_back() -> None:
    h = _harness()
    handler = CountingHandler()
    p = _processor(h, handler, tick_interval=5.0)
    await p.start()
    h.broker.fail_next("commit")
    await p.step()
    assert h.broker.records(OUT) == []
    await h.clock.advance(5.0)
    await p.step()
    assert [orjson.loads(r.value) for r in h.broker.records(STATE)] == [1]  # the failed tick left no count


async def test_lag_is_exported_per_partition_and_dropped_when_revoked() -> None:
    h = _harness(partitions=2)
    registry = CollectorRegistry()
    p = _processor(h, CountingHandler(), registry=registry, max_batch=2)
    for _ in range(5):
        h.broker.produce(IN, b"a", key=b"k", partition=1)
    await p.start()
    await p.step()
    lag = {"consumergroup": GROUP, "topic": IN}
    assert registry.get_sample_value("kafka_consumergroup_lag", {**lag, "partition": "1"}) == 3
    await p.step()
    await p.step()
    assert registry.get_sample_value("kafka_consumergroup_lag", {**lag, "partition": "1"}) == 0
    other = _processor(h, CountingHandler(), registry=CollectorRegistry())
    await other.start()
    await p.step()  # keeps partition 0 only
    assert registry.get_sample_value("kafka_consumergroup_lag", {**lag, "partition": "1"}) is None


async def test_ready_after_the_first_poll_and_not_when_polling_stops() -> None:
    h = _harness()
    p = _processor(h, CountingHandler())
    await p.start()
    assert not p.is_ready()
    await p.step()
    assert p.is_ready()
    await h.clock.advance(31)
    assert not p.is_ready()


async def test_stop_during_a_retry_gives_the_batch_back_uncommitted() -> None:
    h = _harness()
    p = await _first_record_done(h)
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    h.broker.fail_next("send_offsets")
    step = h.clock.run(p.step())
    p.stop()
    await step
    assert h.broker.committed(GROUP, P0) == 1
    assert [o["count"] for o in _outputs(h)] == [1]


async def test_run_loops_until_stopped_and_releases_everything() -> None:
    h = _harness()
    h.broker.produce(IN, b"a", key=b"k", partition=0)
    p = _processor(h, CountingHandler())
    task = asyncio.ensure_future(p.run())
    await h.clock.settle()
    assert [o["count"] for o in _outputs(h)] == [1]
    p.stop()
    await task
    assert p.partitions == []
    assert all(producer.stopped for producer in h.kafka.producers)
    assert h.broker.groups[GROUP].members == []


async def test_a_batch_that_committed_before_its_error_is_not_written_again() -> None:
    h = _harness()
    p = await _first_record_done(h)
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    await h.clock.run(p.step())
    # The next transaction lands, then the producer fails (its reply lost): the group's offset says it is done.
    h.broker.produce(IN, b"c", key=b"k", partition=0)
    owned = p._owned[P0]
    real_commit = owned.producer.commit_transaction

    async def commit_then_fail() -> None:
        await real_commit()
        raise SenderDied("Unexpected error during batch delivery")

    owned.producer.commit_transaction = commit_then_fail  # type: ignore[method-assign]
    await h.clock.run(p.step())
    assert [o["count"] for o in _outputs(h)] == [1, 2, 3]
    assert h.broker.committed(GROUP, P0) == h.broker.records(IN)[-1].offset + 1


async def test_a_tick_whose_producer_died_resyncs_the_partition() -> None:
    h = _harness()
    p = await _first_record_done(h, tick_interval=5.0)
    h.broker.fail_next("commit", SenderDied("Unexpected error during batch delivery"))
    await h.clock.advance(6.0)
    await h.clock.run(p.step())
    h.broker.produce(IN, b"b", key=b"k", partition=0)
    await h.clock.run(p.step())
    assert [o["count"] for o in _outputs(h)] == [1, 2]
