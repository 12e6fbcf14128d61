"""Exactly-once consume -> transform -> produce over Kafka transactions, the loop ingest and billing share.

One transactional producer per input partition (aiokafka has no KIP-447 group fencing, so the
transactional id must follow the partition: a new owner's `init_transactions` fences the old one).
Each fetched batch of a partition is one transaction holding the outputs, the state changes and the
consumed offsets, so after a crash either all of a batch's effects are visible to
`read_committed` readers or none are. Per-partition state lives in memory and is rebuilt from a
compacted changelog topic, co-partitioned with the input, when a partition is assigned.

Clients come from a `ClientFactory` and time from a `Clock`, so `apiplus.harness` can drive the
whole loop in memory: `start()`, then `step()` per poll, `close()`; `run()` is those three in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiokafka.errors import KafkaError, ProducerFenced

from apiplus.backoff import Backoff
from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.dlq import DeadLetterWriter
from apiplus.errors import ErrorCode, PermanentError, TransientError
from apiplus.kafka.compacted import load_table
from apiplus.kafka.lag import LagExporter
from apiplus.kafka.rebalance import RebalanceAdapter
from apiplus.kafka.types import ClientFactory, Consumer, Output, TransactionalProducer, send_outputs
from apiplus.metrics import ProcessorMetrics
from apiplus.state import PartitionState
from apiplus.topics import dead_letter_topic

__all__ = ["Handler", "Output", "PartitionState", "ProcessorConfig", "TransactionalProcessor"]

log = logging.getLogger("apiplus.processor")
READY_POLL_SECONDS = 30.0  # no poll for this long: not ready
# Delays before retrying a record (TransientError) and a whole batch transaction (abort).
DEFAULT_BACKOFF = Backoff(first=0.4, cap=5.0)
RESYNC_TIMEOUT_SECONDS = 30.0  # one attempt to take a partition on again after a Kafka failure


class Handler(Protocol):
    async def prepare(self, records: Sequence[Any]) -> None:
        """Look at a fetched batch before its records are handled (e.g. one Redis round trip for all);
        called again on every attempt of the batch's transaction. A no-op is fine."""

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
    dlq_for: Callable[[str], str] = dead_letter_topic
    max_batch: int = 500
    fetch_timeout_ms: int = 200
    tick_interval: float = 5.0
    transient_attempts: int = 4
    backoff: Backoff = DEFAULT_BACKOFF
    lag_topic_label: Callable[[str], str] = lambda topic: topic
    # How changelog values become bytes and back. The partition's table holds decoded values between
    # batches (decoded once per key when the partition is assigned) and each key changed by a batch is
    # encoded once, when that batch's transaction writes the changelog. A handler that keeps its own
    # objects in the table (billing's TenantState) passes its codec; the values must be immutable, as
    # `PartitionState.rollback` restores an aborted batch by dropping its changes, not by undoing them.
    state_encode: Callable[[Any], bytes] = orjson.dumps
    state_decode: Callable[[bytes], Any] = orjson.loads


class RecordRunner:
    """A record whose handler raised: retried in place on TransientError (then the batch aborts),
    dead-lettered on PermanentError or on any unexpected exception, so bad input never stops a worker."""

    def __init__(self, handler: Handler, dead_letters: DeadLetterWriter, config: ProcessorConfig,
                 metrics: ProcessorMetrics, clock: Clock) -> None:
        self.handler = handler
        self.dead_letters = dead_letters
        self.config = config
        self.metrics = metrics
        self.clock = clock

    async def recover(self, record: Any, state: PartitionState, failed: Exception) -> tuple[Sequence[Output], bool]:
        """After the handler's first attempt raised `failed`: retry a TransientError in place (the last one
        re-raised: the batch aborts), dead-letter a PermanentError or any unexpected exception. The one
        place that catches broadly; the batch loop calls the handler itself and comes here only on failure."""
        attempt = 1
        while True:
            if isinstance(failed, PermanentError):
                return [self.dead_letters.output(record, failed)], True
            if not isinstance(failed, TransientError):
                log.error("handler failed", exc_info=failed,
                          extra={"topic": record.topic, "partition": record.partition, "offset": record.offset})
                error = PermanentError(ErrorCode.INTERNAL, f"unexpected {type(failed).__name__} in handler")
                return [self.dead_letters.output(record, error)], True
            if attempt >= self.config.transient_attempts:
                raise failed
            self.metrics.retries.inc()
            await self.clock.sleep(self.config.backoff.delay(attempt, failed.retry_after))
            attempt += 1
            try:
                return await self.handler.handle(record, state), False
            except Exception as exc:  # noqa: BLE001 - the consume loop's one broad catch, see above
                failed = exc


@dataclass
class _Owned:
    """What the processor holds for one assigned partition."""

    producer: TransactionalProducer
    state: PartitionState
    resume_at: int = 0  # after a resync: the group's committed offset of the partition


class TransactionalProcessor:
    def __init__(
        self,
        config: ProcessorConfig,
        clients: ClientFactory,
        handler: Handler,
        metrics: ProcessorMetrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.clients = clients
        self.handler = handler
        self.metrics = metrics
        self.clock = clock
        dead_letters = DeadLetterWriter(config.app, route=config.dlq_for, on_written=metrics.dead_letter, clock=clock)
        self.records = RecordRunner(handler, dead_letters, config, metrics, clock)
        self.lag = LagExporter(metrics.lag, config.group_id, config.lag_topic_label)
        self._owned: dict[Any, _Owned] = {}
        self._lock = asyncio.Lock()  # batches, ticks and rebalances never interleave
        self._stopping = asyncio.Event()
        self._consumer: Consumer | None = None
        self._last_tick = 0.0
        self._last_poll: float | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """Joined the group and polling; an instance beyond the partition count is ready with none."""
        return self._last_poll is not None and self.clock.monotonic() - self._last_poll < READY_POLL_SECONDS

    @property
    def partitions(self) -> list[Any]:
        """The input partitions held now, sorted."""
        return sorted(self._owned)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.start()
        try:
            while not self._stopping.is_set():
                await self.step()
        finally:
            await self.close()

    async def start(self) -> None:
        consumer = self.clients.group_consumer(self.config.group_id, max_poll_records=self.config.max_batch)
        await consumer.start()
        self._consumer = consumer
        listener = RebalanceAdapter(self)
        if self.config.pattern:
            consumer.subscribe(pattern=self.config.pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(self.config.topics), listener=listener)

    async def step(self) -> None:
        """One poll: each partition's batch in its own transaction, then timers, then lag."""
        consumer = self._require_consumer()
        batches = await consumer.getmany(timeout_ms=self.config.fetch_timeout_ms, max_records=self.config.max_batch)
        self._last_poll = self.clock.monotonic()
        async with self._lock:
            for tp, records in batches.items():
                if records and tp in self._owned:
                    await self._process_batch(tp, records)
            await self._maybe_tick()
        await self.lag.export(consumer, list(self._owned))

    async def close(self) -> None:
        async with self._lock:
            await self._release(list(self._owned))
        if self._consumer is not None:
            await self._consumer.stop()
        self._consumer = None
        self._last_poll = None

    def _require_consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("processor not started")
        return self._consumer

    # --- the batch transaction ------------------------------------------------------------
    async def _process_batch(self, tp: Any, records: list[Any]) -> None:
        owned = self._owned[tp]
        started = self.clock.monotonic()
        attempt = 0
        while True:
            try:
                await self.handler.prepare(records)
                async with owned.producer.transaction():
                    outputs, outcomes = await self._handle_all(records, owned)
                    await send_outputs(owned.producer, [*outputs, *self._state_outputs(owned, tp.partition)])
                    await owned.producer.send_offsets_to_transaction({tp: records[-1].offset + 1},
                                                                     self.config.group_id)
                owned.state.commit()
                break
            except ProducerFenced:
                await self._fenced(tp, owned)
                return
            except (TransientError, KafkaError, OSError) as exc:
                owned.state.rollback()
                attempt += 1
                self.metrics.transaction_aborts.inc()
                log.warning(
                    "batch aborted; retrying",
                    extra={"topic": tp.topic, "partition": tp.partition, "attempt": attempt,
                           "error": type(exc).__name__, "detail": str(exc)[:200]},
                )
                if self._stopping.is_set():
                    # Nothing was committed: the next owner starts again from the committed offset.
                    return
                await self.clock.sleep(self.config.backoff.delay(attempt))
                if isinstance(exc, TransientError):
                    continue
                # A Kafka failure can leave the producer unusable for good (aiokafka's sender dies on a
                # connection dropped during a coordinator lookup, and every later transaction fails) and
                # the batch's outcome unknown (the commit may have landed). Start over from what Kafka has.
                resynced = await self._resync(tp)
                if resynced is None:
                    return
                owned = resynced
                records = [r for r in records if r.offset >= owned.resume_at]
                if not records:
                    return  # the failed transaction had committed after all
        for outcome, count in outcomes.items():
            self.metrics.record(outcome, count)
        self.metrics.batch_duration.observe(self.clock.monotonic() - started)

    async def _handle_all(self, records: list[Any], owned: _Owned) -> tuple[list[Output], dict[str, int]]:
        """The batch's outputs, in record order, produced together (one batch per output partition).
        The handler is called here directly (no wrapper per record); a failure goes to `RecordRunner.recover`."""
        outputs: list[Output] = []
        dead_lettered = 0
        handle = self.handler.handle
        state = owned.state
        for record in records:
            try:
                produced = await handle(record, state)
            except Exception as exc:  # noqa: BLE001 - handed to RecordRunner.recover, the one broad catch
                produced, dead = await self.records.recover(record, state, exc)
                dead_lettered += dead
            outputs += produced
        return outputs, {"ok": len(records) - dead_lettered, "dead_lettered": dead_lettered}

    def _state_outputs(self, owned: _Owned, partition: int) -> list[Output]:
        if self.config.changelog_topic is None:
            return []
        return [
            Output(self.config.changelog_topic, None if value is None else self.config.state_encode(value),
                   key=key.encode(), partition=partition)
            for key, value in owned.state.pending().items()
        ]

    async def _maybe_tick(self) -> None:
        now = self.clock.time()
        if now - self._last_tick < self.config.tick_interval:
            return
        self._last_tick = now
        for tp, owned in list(self._owned.items()):
            try:
                async with owned.producer.transaction():
                    ticked = await self.handler.tick(owned.state, now)
                    await send_outputs(owned.producer, [*ticked, *self._state_outputs(owned, tp.partition)])
                owned.state.commit()
            except ProducerFenced:
                await self._fenced(tp, owned)
            except (TransientError, KafkaError, OSError) as exc:
                owned.state.rollback()
                self.metrics.transaction_aborts.inc()
                log.warning("tick aborted", extra={"topic": tp.topic, "partition": tp.partition,
                                                   "error": type(exc).__name__})
                if not isinstance(exc, TransientError):
                    await self._resync(tp)  # the producer may be unusable: see _process_batch

    async def _fenced(self, tp: Any, owned: _Owned) -> None:
        owned.state.rollback()
        log.warning("producer fenced; partition moved", extra={"topic": tp.topic, "partition": tp.partition})
        await self._release([tp])

    # --- assignment (PartitionOwner, called through RebalanceAdapter) ----------------------
    async def partitions_assigned(self, partitions: list[Any]) -> None:
        async with self._lock:
            for tp in partitions:
                if tp not in self._owned:
                    await self._acquire(tp)

    async def partitions_revoked(self, partitions: list[Any]) -> None:
        async with self._lock:
            await self._release(partitions)

    async def _acquire(self, tp: Any) -> None:
        producer = self.clients.transactional_producer(f"{self.config.app}.{tp.topic}.{tp.partition}")
        try:
            await producer.start()  # init_transactions: fences a zombie owner, aborts its open transaction
            committed: dict[str, Any] = {}
            if self.config.changelog_topic is not None:
                committed = await load_table(self.clients, self.config.changelog_topic, tp.partition,
                                             self.config.state_decode)
        except BaseException:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise
        self._owned[tp] = _Owned(producer, PartitionState(tp.partition, committed))
        log.info("partition assigned", extra={"topic": tp.topic, "partition": tp.partition,
                                              "state_keys": len(committed)})

    async def _resync(self, tp: Any) -> _Owned | None:
        """Take the partition on again as a new owner would, keeping the consumer's assignment: a new
        producer (its init_transactions completes or aborts the transaction left in doubt), the state
        from the changelog and the group's committed offset. None when the partition was given up."""
        await self._release([tp])
        while not self._stopping.is_set():
            try:
                # Bounded, so that a stop during a broker outage is not held up (TimeoutError is an OSError).
                await asyncio.wait_for(self._acquire(tp), RESYNC_TIMEOUT_SECONDS)
                committed = await asyncio.wait_for(self._require_consumer().committed(tp), RESYNC_TIMEOUT_SECONDS)
            except ProducerFenced:
                await self._release([tp])
                return None
            except (KafkaError, OSError) as exc:
                await self._release([tp])
                self.metrics.transaction_aborts.inc()
                log.warning("partition resync failed; retrying",
                            extra={"topic": tp.topic, "partition": tp.partition, "error": type(exc).__name__,
                                   "detail": str(exc)[:200]})
                await self.clock.sleep(self.config.backoff.cap)
                continue
            owned = self._owned[tp]
            owned.resume_at = committed or 0
            return owned
        return None

    async def _release(self, partitions: Sequence[Any]) -> None:
        for tp in partitions:
            owned = self._owned.pop(tp, None)
            if owned is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await owned.producer.stop()
                log.info("partition released", extra={"topic": tp.topic, "partition": tp.partition})
