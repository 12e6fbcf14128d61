"""Exactly-once consume -> transform -> produce over Kafka transactions, the loop ingest and billing share.

One transactional producer per input partition (aiokafka has no KIP-447 group fencing, so the
transactional id must follow the partition: a new owner's `init_transactions` fences the old one).
Each fetched batch of a partition is one transaction holding the outputs, the state changes and the
consumed offsets, so after a crash either all of a batch's effects are visible to
`read_committed` readers or none are. Per-partition state lives in memory and is rebuilt from a
compacted changelog topic, co-partitioned with the input, when a partition is assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from apiplus.dlq import dead_letter
from apiplus.errors import ErrorCode, PermanentError, TransientError
from apiplus.kafka import KafkaClientConfig
from apiplus.metrics import ProcessorMetrics

log = logging.getLogger("apiplus.processor")


@dataclass(frozen=True)
class Output:
    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None


class PartitionState:
    """A partition's table: committed values plus the changes of the batch in progress."""

    _DELETED = object()

    def __init__(self, partition: int, committed: dict[str, Any] | None = None) -> None:
        self.partition = partition
        self._committed: dict[str, Any] = committed or {}
        self._pending: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self._pending.get(key, self._committed.get(key, default))
        return default if value is self._DELETED else value

    def put(self, key: str, value: Any) -> None:
        self._pending[key] = value

    def delete(self, key: str) -> None:
        self._pending[key] = self._DELETED

    def keys(self) -> set[str]:
        live = set(self._committed) | set(self._pending)
        return {k for k in live if self._pending.get(k) is not self._DELETED}

    def pending(self) -> dict[str, Any | None]:
        return {k: (None if v is self._DELETED else v) for k, v in self._pending.items()}

    def commit(self) -> None:
        for key, value in self._pending.items():
            if value is self._DELETED:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value
        self._pending.clear()

    def rollback(self) -> None:
        self._pending.clear()


class Handler(Protocol):
    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        """Outputs for one record; raise PermanentError for bad input, TransientError to retry."""

    async def tick(self, state: PartitionState, now: float) -> Sequence[Output]:
        """Timer-driven outputs for one partition (stale channels, due-day closings)."""


@dataclass
class ProcessorConfig:
    app: str
    group_id: str
    topics: Sequence[str] = ()
    pattern: str | None = None
    changelog_topic: str | None = None
    dlq_for: Callable[[str], str] = lambda topic: f"{topic}.dlq"
    max_batch: int = 500
    fetch_timeout_ms: int = 200
    tick_interval: float = 5.0
    transient_attempts: int = 4
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    lag_topic_label: Callable[[str], str] = lambda topic: topic


class TransactionalProcessor:
    def __init__(
        self,
        config: ProcessorConfig,
        kafka: KafkaClientConfig,
        handler: Handler,
        metrics: ProcessorMetrics,
    ) -> None:
        self.config = config
        self.kafka = kafka
        self.handler = handler
        self.metrics = metrics
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._states: dict[TopicPartition, PartitionState] = {}
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._last_tick = 0.0
        self._last_poll = 0.0

    # --- readiness -------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """Joined the group and polling; an instance beyond the partition count is ready with none."""
        return self._started.is_set() and time.monotonic() - self._last_poll < 30

    # --- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.options(),
            group_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.config.max_batch,
            metadata_max_age_ms=30000,
        )
        self._consumer = consumer
        await consumer.start()
        listener = _Listener(self)
        if self.config.pattern:
            consumer.subscribe(pattern=self.config.pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(self.config.topics), listener=listener)
        self._started.set()
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=self.config.fetch_timeout_ms, max_records=self.config.max_batch
                )
                self._last_poll = time.monotonic()
                async with self._lock:
                    for tp, records in batches.items():
                        if records and tp in self._producers:
                            await self._process_batch(tp, records)
                    await self._maybe_tick()
                await self._export_lag(consumer)
        finally:
            async with self._lock:
                await self._release(list(self._producers))
            await consumer.stop()
            self._started.clear()

    # --- the batch transaction ------------------------------------------------------------
    async def _process_batch(self, tp: TopicPartition, records: list[Any]) -> None:
        producer = self._producers[tp]
        state = self._states[tp]
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                # Optional: a handler may look at the whole batch first (one Redis round trip per batch).
                prepare = getattr(self.handler, "prepare", None)
                if prepare is not None:
                    await prepare(records)
                async with producer.transaction():
                    outcomes = await self._handle_all(records, state, producer)
                    await self._send_state(producer, state, tp.partition)
                    await producer.send_offsets_to_transaction(
                        {tp: records[-1].offset + 1}, self.config.group_id
                    )
                state.commit()
                break
            except ProducerFenced:
                state.rollback()
                log.warning("producer fenced; partition moved", extra={"topic": tp.topic, "partition": tp.partition})
                await self._release([tp])
                return
            except (TransientError, KafkaError, OSError) as exc:
                state.rollback()
                attempt += 1
                self.metrics.transaction_aborts.inc()
                delay = min(self.config.backoff_cap, self.config.backoff_base * 2 ** min(attempt, 10))
                log.warning(
                    "batch aborted; retrying",
                    extra={"topic": tp.topic, "partition": tp.partition, "attempt": attempt,
                           "error": type(exc).__name__, "detail": str(exc)[:200]},
                )
                if self._stopping.is_set():
                    # Nothing was committed: the next owner starts again from the committed offset.
                    return
                await asyncio.sleep(delay)
        for outcome, count in outcomes.items():
            self.metrics.record(outcome, count)
        self.metrics.batch_duration.observe(time.perf_counter() - started)

    async def _handle_all(
        self, records: list[Any], state: PartitionState, producer: AIOKafkaProducer
    ) -> dict[str, int]:
        outcomes = {"ok": 0, "dead_lettered": 0}
        for record in records:
            outputs, dead_lettered = await self._handle_one(record, state)
            outcomes["dead_lettered" if dead_lettered else "ok"] += 1
            for out in outputs:
                await producer.send(out.topic, value=out.value, key=out.key, partition=out.partition)
        return outcomes

    async def _handle_one(self, record: Any, state: PartitionState) -> tuple[Sequence[Output], bool]:
        """The one place that catches broadly: bad input never stops the worker."""
        for attempt in range(1, self.config.transient_attempts + 1):
            try:
                return await self.handler.handle(record, state), False
            except PermanentError as exc:
                return [self._dead_letter(record, exc)], True
            except TransientError as exc:
                if attempt == self.config.transient_attempts:
                    raise
                self.metrics.retries.inc()
                backoff = min(self.config.backoff_cap, self.config.backoff_base * 2**attempt)
                await asyncio.sleep(exc.retry_after or backoff)
            except Exception as exc:
                log.exception("handler failed", extra={"topic": record.topic, "partition": record.partition,
                                                      "offset": record.offset})
                error = PermanentError(ErrorCode.INTERNAL, f"unexpected {type(exc).__name__} in handler")
                return [self._dead_letter(record, error)], True
        raise AssertionError("unreachable")

    def _dead_letter(self, record: Any, exc: PermanentError) -> Output:
        self.metrics.dead_letter(str(exc.code))
        log.info(
            "record dead-lettered",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset,
                   "code": str(exc.code), "field": exc.field},
        )
        value = dead_letter(
            producer=self.config.app,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            raw=record.value,
            error=exc,
        )
        return Output(self.config.dlq_for(record.topic), orjson.dumps(value), key=record.key)

    async def _send_state(self, producer: AIOKafkaProducer, state: PartitionState, partition: int) -> None:
        if self.config.changelog_topic is None:
            return
        for key, value in state.pending().items():
            await producer.send(
                self.config.changelog_topic,
                key=key.encode(),
                value=None if value is None else orjson.dumps(value),
                partition=partition,
            )

    async def _maybe_tick(self) -> None:
        now = time.time()
        if now - self._last_tick < self.config.tick_interval:
            return
        self._last_tick = now
        for tp in list(self._producers):
            state = self._states[tp]
            producer = self._producers[tp]
            try:
                async with producer.transaction():
                    outputs = await self.handler.tick(state, now)
                    for out in outputs:
                        await producer.send(out.topic, value=out.value, key=out.key, partition=out.partition)
                    await self._send_state(producer, state, tp.partition)
                state.commit()
            except ProducerFenced:
                state.rollback()
                await self._release([tp])
            except (TransientError, KafkaError, OSError):
                state.rollback()
                self.metrics.transaction_aborts.inc()
                log.warning("tick aborted", extra={"topic": tp.topic, "partition": tp.partition})

    async def _export_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag per declared topic and partition; topics outside our naming (Evolution's) summed."""
        totals: dict[tuple[str, str], int] = {}
        for tp in list(self._producers):
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await consumer.position(tp)
            except KafkaError:
                continue
            label = self.config.lag_topic_label(tp.topic)
            key = (label, str(tp.partition) if label == tp.topic else "all")
            totals[key] = totals.get(key, 0) + max(0, end - position)
        for (topic, partition), lag in totals.items():
            self.metrics.lag.labels(consumergroup=self.config.group_id, topic=topic, partition=partition).set(lag)

    # --- assignment -----------------------------------------------------------------------
    async def _acquire(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            if tp in self._producers:
                continue
            producer = AIOKafkaProducer(
                **self.kafka.options(),
                transactional_id=f"{self.config.app}.{tp.topic}.{tp.partition}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
            )
            await producer.start()  # init_transactions: fences a zombie owner, aborts its open transaction
            committed = {}
            if self.config.changelog_topic is not None:
                committed = await load_changelog(self.kafka, self.config.changelog_topic, tp.partition)
            self._producers[tp] = producer
            self._states[tp] = PartitionState(tp.partition, committed)
            log.info("partition assigned", extra={"topic": tp.topic, "partition": tp.partition,
                                                  "state_keys": len(committed)})

    async def _release(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            producer = self._producers.pop(tp, None)
            self._states.pop(tp, None)
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
                log.info("partition released", extra={"topic": tp.topic, "partition": tp.partition})


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: TransactionalProcessor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.processor._lock:
            await self.processor._release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.processor._lock:
            await self.processor._acquire(sorted(assigned))


async def load_changelog(kafka: KafkaClientConfig, topic: str, partition: int) -> dict[str, Any]:
    """The latest committed value of every key in one partition of a compacted topic."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        **kafka.options(), enable_auto_commit=False, isolation_level="read_committed", group_id=None
    )
    await consumer.start()
    table: dict[str, Any] = {}
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batch.get(tp, []):
                key = record.key.decode()
                if record.value is None:
                    table.pop(key, None)
                else:
                    table[key] = orjson.loads(record.value)
    finally:
        await consumer.stop()
    return table

