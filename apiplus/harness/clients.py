"""Fake Kafka clients over a `FakeBroker`, with the same calls as aiokafka's that the loops use."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import CommitFailedError, IllegalOperation, KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from apiplus.harness.broker import FakeBroker, Transaction
from apiplus.kafka.clients import DEFAULT_PARTITION_FETCH_BYTES


class SenderDied(KafkaError):  # type: ignore[misc]
    """aiokafka's "Unexpected error during batch delivery": its sender task died (a connection dropped
    during a coordinator lookup). The producer is then unusable for good: every later transaction fails
    (aiokafka asserts on the state change FATAL_ERROR -> IN_TRANSACTION), as the fake's does."""


class ReplyLost(KafkaError):  # type: ignore[misc]
    """Inject at "commit": the transaction commits on the broker, but its reply never reaches the producer
    (the connection dropped after the request was sent), which raises as if the commit had failed."""


class Killed(BaseException):
    """Inject with `FakeBroker.fail_next(op, Killed())`: the process dies at that call, as kill -9.
    A BaseException, so no loop catches it; a producer it hits leaves its transaction open."""


@dataclass(frozen=True)
class Delivery:
    """What a send's acknowledgement resolves to (aiokafka's RecordMetadata has these fields)."""

    topic: str
    partition: int
    offset: int


class FakeConsumer:
    """A group member (`group_id`) or a plain reader (`None`: assign + seek). Never waits for data:
    a poll with nothing to return yields to the loop once and returns `{}`."""

    def __init__(self, broker: FakeBroker, group_id: str | None, *, read_committed: bool = True,
                 max_poll_records: int = 500, max_partition_fetch_bytes: int = DEFAULT_PARTITION_FETCH_BYTES) -> None:
        self.broker = broker
        self.group_id = group_id
        self.read_committed = read_committed
        self.max_poll_records = max_poll_records
        self.max_partition_fetch_bytes = max_partition_fetch_bytes  # recorded for tests, not enforced
        self.pending_assignment: tuple[int, list[TopicPartition]] | None = None
        self.generation = 0
        self._topics: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._listener: Any = None
        self._assigned: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self.started = False

    # --- lifecycle and subscription ---------------------------------------------------------
    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        if self.group_id is not None:
            self.broker.leave(self.group_id, self)
        self.started = False

    def subscribe(self, topics: Sequence[str] = (), pattern: str | None = None, listener: Any = None) -> None:
        if self.group_id is None:
            raise IllegalOperation("subscribe needs a group_id")
        self._topics = set(topics)
        self._pattern = re.compile(pattern) if pattern else None
        self._listener = listener
        self.broker.join(self.group_id, self)

    def wants(self, topic: str) -> bool:
        return topic in self._topics or (self._pattern is not None and self._pattern.fullmatch(topic) is not None)

    def assign(self, partitions: Sequence[Any]) -> None:
        self._assigned = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        self._positions = {tp: self._positions.get(tp, 0) for tp in self._assigned}

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def _apply_rebalance(self) -> None:
        if self.pending_assignment is None:
            return
        generation, partitions = self.pending_assignment
        self.pending_assignment = None
        if self._listener is not None and self._assigned:
            await self._listener.on_partitions_revoked(list(self._assigned))
        self.generation = generation
        self._assigned = list(partitions)
        assert self.group_id is not None
        self._positions = {tp: self.broker.committed(self.group_id, tp) or 0 for tp in partitions}
        self._paused &= set(partitions)
        if self._listener is not None:
            await self._listener.on_partitions_assigned(list(partitions))

    # --- fetching ---------------------------------------------------------------------------
    async def getmany(self, *partitions: Any, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        await self._apply_rebalance()
        self.broker.check_fault("fetch")
        budget = max_records or self.max_poll_records
        batches: dict[TopicPartition, list[Any]] = {}
        for tp in sorted(partitions or self._assigned):
            if tp in self._paused or budget <= 0:
                continue
            records = self._fetch(tp, budget)
            if records:
                batches[tp] = records
                budget -= len(records)
        if not batches:
            await asyncio.sleep(0)
        return batches

    def _fetch(self, tp: TopicPartition, budget: int) -> list[Any]:
        log = self.broker.logs[tp]
        end = self.broker.last_stable_offset(tp) if self.read_committed else len(log)
        position = self._positions.get(tp, 0)
        records: list[Any] = []
        while position < end and len(records) < budget:
            entry = log[position]
            if entry.visible(self.read_committed):
                records.append(entry.record)
            position += 1
        self._positions[tp] = position
        return records

    async def seek_to_beginning(self, *partitions: Any) -> None:
        for tp in partitions or self._assigned:
            self._positions[TopicPartition(tp.topic, tp.partition)] = 0

    async def end_offsets(self, partitions: Sequence[Any]) -> dict[TopicPartition, int]:
        return {tp: self._end(tp) for tp in partitions}

    async def position(self, partition: Any) -> int:
        return self._positions.get(partition, 0)

    async def committed(self, partition: Any) -> int | None:
        if self.group_id is None:
            raise IllegalOperation("a reader has no group")
        self.broker.check_fault("committed")
        return self.broker.committed(self.group_id, TopicPartition(partition.topic, partition.partition))

    def highwater(self, partition: Any) -> int | None:
        return self.broker.high_watermark(partition)

    def last_stable_offset(self, partition: Any) -> int | None:
        return self.broker.last_stable_offset(partition) if self.read_committed else None

    def _end(self, tp: TopicPartition) -> int:
        return self.broker.last_stable_offset(tp) if self.read_committed else self.broker.high_watermark(tp)

    # --- commits and flow control -----------------------------------------------------------
    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        if self.group_id is None:
            raise IllegalOperation("commit needs a group_id")
        self.broker.check_fault("commit_offsets")
        offsets = dict(offsets) if offsets is not None else dict(self._positions)
        for tp in offsets:
            if not self.broker.owns(self.group_id, self, tp):
                raise CommitFailedError(f"{tp} is no longer assigned to this member")
        for tp, offset in offsets.items():
            self.broker.group_offsets[(self.group_id, tp)] = offset

    def pause(self, *partitions: Any) -> None:
        self._paused |= set(partitions)

    def resume(self, *partitions: Any) -> None:
        self._paused -= set(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)


class FakeProducer:
    """Idempotent, or transactional when given a `transactional_id`. `crash()` stops it as kill -9
    would: an open transaction stays open (holding back read_committed readers) until the next
    producer with the same id starts."""

    def __init__(self, broker: FakeBroker, transactional_id: str | None = None) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.epoch: int | None = None
        self.txn: Transaction | None = None
        self.stopped = False
        self.broken = False

    async def start(self) -> None:
        if self.transactional_id is not None:
            self.epoch = self.broker.init_transactions(self.transactional_id)

    async def stop(self) -> None:
        if self.txn is not None and not self._fenced():
            self.broker.end_transaction(self.txn, commit=False)
        self.txn = None
        self.stopped = True

    def crash(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> asyncio.Future[Delivery]:
        self._check_usable()
        if self.transactional_id is not None and self.txn is None:
            raise IllegalOperation("a transactional producer sends only inside a transaction")
        self.broker.check_fault("send")
        tp = self.broker.choose_partition(topic, key, partition)
        offset = self.broker.append(tp, key, value, headers or (), txn=self.txn, timestamp_ms=timestamp_ms)
        delivery: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        delivery.set_result(Delivery(tp.topic, tp.partition, offset))
        return delivery

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self.begin_transaction()
        try:
            yield
        except ProducerFenced:
            raise  # fatal: nothing to abort from here, the new owner already did
        except Killed:
            self.crash()
            raise
        except BaseException:
            await self.abort_transaction()
            raise
        await self.commit_transaction()

    async def begin_transaction(self) -> None:
        self._check_usable()
        if self.txn is not None:
            raise IllegalOperation("a transaction is already open")
        self.broker.check_fault("begin")
        if self.transactional_id is None or self.epoch is None:
            raise IllegalOperation("not a started transactional producer")
        self.txn = Transaction(self.transactional_id, self.epoch)
        self.broker.open_txns[self.transactional_id] = self.txn

    async def send_offsets_to_transaction(self, offsets: Mapping[Any, int], group_id: str) -> None:
        self._check_usable()
        if self.txn is None:
            raise IllegalOperation("no transaction is open")
        self.broker.check_fault("send_offsets")
        self.txn.offsets.update({(group_id, TopicPartition(tp.topic, tp.partition)): o for tp, o in offsets.items()})

    async def commit_transaction(self) -> None:
        txn = self._open_txn()
        try:
            self.broker.check_fault("commit")
        except Killed:
            self.crash()
            raise
        except ReplyLost:
            self.txn = None
            self.broker.end_transaction(txn, commit=True)
            raise
        except SenderDied:
            self.broken = True  # the transaction stays open until a new producer with the id starts
            self.txn = None
            raise
        except BaseException:
            self.txn = None
            self.broker.end_transaction(txn, commit=False)
            raise
        self.txn = None
        self.broker.end_transaction(txn, commit=True)

    async def abort_transaction(self) -> None:
        txn = self._open_txn()
        self.txn = None
        self.broker.end_transaction(txn, commit=False)

    def _open_txn(self) -> Transaction:
        self._check_usable()
        if self.txn is None:
            raise IllegalOperation("no transaction is open")
        return self.txn

    def _fenced(self) -> bool:
        tid = self.transactional_id
        return tid is not None and self.broker.epochs.get(tid) != self.epoch

    def _check_usable(self) -> None:
        if self.broken:
            raise AssertionError("Invalid state transition TransactionState.FATAL_ERROR -> IN_TRANSACTION")
        if self.stopped:
            raise IllegalOperation("producer is stopped")
        if self._fenced():
            self.txn = None
            raise ProducerFenced()


class FakeKafka:
    """The harness's `ClientFactory`: every client a loop asks for, over one `FakeBroker`."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []

    def group_consumer(self, group_id: str, *, max_poll_records: int = 500,
                       max_partition_fetch_bytes: int = DEFAULT_PARTITION_FETCH_BYTES) -> FakeConsumer:
        consumer = FakeConsumer(self.broker, group_id, max_poll_records=max_poll_records,
                                max_partition_fetch_bytes=max_partition_fetch_bytes)
        self.consumers.append(consumer)
        return consumer

    def reader(self) -> FakeConsumer:
        return FakeConsumer(self.broker, None)

    def producer(self, *, linger_ms: int = 5) -> FakeProducer:
        producer = FakeProducer(self.broker)
        self.producers.append(producer)
        return producer

    def transactional_producer(self, transactional_id: str) -> FakeProducer:
        producer = FakeProducer(self.broker, transactional_id)
        self.producers.append(producer)
        return producer

    async def partitions_for(self, topic: str) -> list[int]:
        return self.broker.partitions(topic)
