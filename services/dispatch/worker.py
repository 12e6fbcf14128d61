"""dispatch's worker: wires the parts and runs the poll loop. It decides nothing itself.

    intake.py    a fetched batch -> jobs in lanes, or refusals (result + dead letter)
    lanes.py     per-channel queues: holding, pacing, expiry; out-of-order completion
    delivery.py  one job's provider call and terminal result, retries, parking
    results.py   what is written to Kafka; store.py / record.py the send record
    commits.py   which offsets may be committed
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from apiplus.kafka import KafkaClientConfig
from apiplus.table import TopicTable
from services.dispatch.clock import Clock, SystemClock
from services.dispatch.commits import Commits
from services.dispatch.core import Channel
from services.dispatch.delivery import Delivery, Loop, RetryPolicy
from services.dispatch.holding import is_open
from services.dispatch.intake import Intake
from services.dispatch.lanes import LaneRules, Lanes
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.providers import PacingRule, Provider
from services.dispatch.results import Outputs
from services.dispatch.sender import ProviderClient
from services.dispatch.settings import DispatchSettings
from services.dispatch.store import RecordStore, SendRecords


class Dispatcher:
    def __init__(self, settings: DispatchSettings, kafka: KafkaClientConfig, store: RecordStore,
                 client: ProviderClient, metrics: DispatchMetrics, clock: Clock | None = None,
                 loop: Loop | None = None) -> None:
        self.settings = settings
        self.kafka = kafka
        self.client = client
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.registry = TopicTable(kafka, settings.registry_topic, accept=_valid_channel)
        self.health = TopicTable(kafka, settings.health_topic,
                                 on_update=lambda channel_id, _: self.lanes.wake(channel_id))
        self.commits = Commits()
        self.records = SendRecords(store)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._last_poll = 0.0
        self._tables: list[asyncio.Task[None]] = []
        self.outputs = Outputs(_LazyProducer(self), results_topic=settings.results_topic,
                               dlq_topic=f"{settings.commands_topic}.dlq", retry_topic=settings.retry_topic,
                               metrics=metrics, clock=self.clock)
        self.delivery = Delivery(
            send=client.send, idempotent=client.idempotent, records=self.records, outputs=self.outputs,
            commits=self.commits, metrics=metrics, clock=self.clock, max_in_flight=settings.max_in_flight,
            policy=RetryPolicy(settings.attempts_in_place, settings.retry_rounds, settings.retry_delay_seconds,
                               self._backoff),
            loop=loop,
        )
        self.lanes = Lanes(delivery=self.delivery, outputs=self.outputs, clock=self.clock, rules=LaneRules(
            is_open=lambda channel_id: is_open(self.health.get(channel_id),
                                               send_when_unknown=settings.send_when_health_unknown),
            pacing=self._pacing if settings.pacing_enabled else None,
            max_queue=settings.max_queue_per_channel,
            drain_timeout=settings.http_timeout_seconds * settings.attempts_in_place,
            draw=random.random,
        ))
        self.intake = Intake(retry_topic=settings.retry_topic, channel=self._channel, records=self.records,
                             lanes=self.lanes, outputs=self.outputs, commits=self.commits, metrics=metrics,
                             clock=self.clock, max_hold=settings.max_hold_seconds)

    def _channel(self, channel_id: str) -> Channel | None:
        row = self.registry.get(channel_id)
        return Channel.from_dict(row) if row is not None else None

    def _pacing(self, channel: Channel) -> PacingRule:
        provider: Provider = self.client.providers[channel.provider]
        return provider.pacing(channel.pacing, self.settings.pacing_defaults)

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        return float(min(s.backoff_cap_seconds, s.backoff_base_seconds * 2 ** (attempt - 1)))

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the producer starts with run()"
        return self._producer

    # --- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self.lanes.stopping.set()
        self.delivery.stopping = True

    def is_ready(self) -> bool:
        return (self.registry.loaded.is_set() and self.health.loaded.is_set() and self._consumer is not None
                and time.monotonic() - self._last_poll < 30)

    async def run(self) -> None:
        self._tables = [asyncio.create_task(self.registry.run()), asyncio.create_task(self.health.run())]
        self._producer = AIOKafkaProducer(**self.kafka.options(), enable_idempotence=True, acks="all", linger_ms=2)
        await self._producer.start()
        try:
            await self._wait_for_tables()
            consumer = self._consumer = AIOKafkaConsumer(
                **self.kafka.options(), group_id=self.settings.group_id, enable_auto_commit=False,
                auto_offset_reset="earliest", isolation_level="read_committed", max_poll_records=1000,
            )
            await consumer.start()
            consumer.subscribe([self.settings.commands_topic, self.settings.retry_topic], listener=_Listener(self))
            await self._poll(consumer)
            await self.delivery.cancel_waits()
            await self.lanes.drain(list(self.commits.trackers))
            await self._commit(consumer)
            await consumer.stop()
        finally:
            await self._close()

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            self._apply_backpressure(consumer)
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            self._last_poll = time.monotonic()
            for tp, records in batches.items():
                if self.commits.owns(tp):
                    await self.intake.accept_batch(tp, records)
            if time.monotonic() - last_commit >= self.settings.commit_interval_seconds:
                await self._commit(consumer)
                self._export_gauges(consumer)
                last_commit = time.monotonic()

    async def _close(self) -> None:
        for table in (self.registry, self.health):
            table.stop()
        for task in self._tables:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        if self._producer is not None:
            await self._producer.stop()
        await self.client.close()

    async def _wait_for_tables(self) -> None:
        while not (self.registry.loaded.is_set() and self.health.loaded.is_set()):
            for task in self._tables:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if self._stopping.is_set():
                return
            await asyncio.sleep(0.05)

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        assigned = list(consumer.assignment())
        if self.lanes.buffered >= self.settings.max_buffered:
            consumer.pause(*assigned)
        elif consumer.paused():
            consumer.resume(*assigned)

    # --- offsets and rebalance ------------------------------------------------------------------
    async def _commit(self, consumer: AIOKafkaConsumer, only: Sequence[TopicPartition] | None = None) -> None:
        offsets = self.commits.due(only)
        if offsets:
            await consumer.commit(offsets)
            self.commits.committed_at(offsets)

    async def revoked(self, tps: list[TopicPartition]) -> None:
        await self.delivery.cancel_waits(tps)
        await self.lanes.drain(tps)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(self._consumer, only=tps)
        self.commits.revoke(tps)

    def _export_gauges(self, consumer: AIOKafkaConsumer) -> None:
        self.lanes.forget_idle_pacers()
        queued, held, paced = self.lanes.counts()
        self.metrics.held.set(held)
        self.metrics.queued.set(queued)
        self.metrics.paced.set(paced)
        self.metrics.table_rows.labels(table="registry").set(len(self.registry.rows))
        self.metrics.table_rows.labels(table="health").set(len(self.health.rows))
        for tp in self.commits.trackers:
            end, committed = consumer.highwater(tp), self.commits.position(tp)
            if end is not None and committed is not None:
                self.metrics.lag.labels(consumergroup=self.settings.group_id, topic=tp.topic,
                                        partition=str(tp.partition)).set(max(0, end - committed))


class _LazyProducer:
    """The Kafka producer starts in run(); the parts are built before."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.dispatcher.producer.send(topic, value=value, key=key,
                                                                          headers=headers)
        return future


def _valid_channel(row: dict[str, Any]) -> bool:
    try:
        Channel.from_dict(row)
    except (KeyError, TypeError):
        return False
    return True


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.dispatcher.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.dispatcher.commits.assign(list(assigned))
