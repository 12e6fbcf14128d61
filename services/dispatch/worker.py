"""dispatch's worker: wires the parts and runs the poll loop. It decides nothing itself.

    intake.py    a fetched batch -> jobs in lanes, or refusals (result + dead letter)
    lanes.py     per-channel queues: holding, pacing, expiry; out-of-order completion
    delivery.py  one job's provider call and terminal result, retries, parking
    results.py   what is written; outbox.py commits it per partition in one transaction with the offset
    commits.py   which offsets may be committed; progress.py what is committed above them
    store.py / record.py   the send record, which guards the provider call

Clients come from a `ClientFactory` and time from a `Clock`, so `apiplus.harness` drives the whole
worker in memory: `start()`, then `step()` per poll, `close()`; `run()` is those three in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from apiplus.backoff import Backoff
from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.dlq import DeadLetterWriter
from apiplus.kafka import ClientFactory, Consumer, LagExporter, RebalanceAdapter
from apiplus.table import TopicTable
from apiplus.topics import dlq_name
from services.dispatch.commits import Commits
from services.dispatch.core import Channel
from services.dispatch.delivery import Delivery, Loop, RetryPolicy
from services.dispatch.holding import is_open
from services.dispatch.intake import Intake
from services.dispatch.lanes import LaneRules, Lanes
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.outbox import Outboxes
from services.dispatch.providers import PacingRule
from services.dispatch.results import PRODUCER, Outputs
from services.dispatch.sender import ProviderPort
from services.dispatch.settings import DispatchSettings
from services.dispatch.stagetrace import StageTrace
from services.dispatch.store import RecordStore, SendRecords

log = logging.getLogger("apiplus.dispatch")
READY_POLL_SECONDS = 30.0  # no poll for this long: not ready
TABLE_WAIT_SECONDS = 0.05


class Dispatcher:
    def __init__(self, settings: DispatchSettings, clients: ClientFactory, store: RecordStore,
                 client: ProviderPort, metrics: DispatchMetrics, clock: Clock = SYSTEM_CLOCK,
                 loop: Loop | None = None, trace: StageTrace | None = None) -> None:
        self.settings = settings
        self.trace = trace  # stagetrace.py: off unless a benchmark asks
        self.loop = loop  # the closed loop's Redis side (docs/loop.md); None: off
        self.clients = clients
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.registry = self._table(settings.registry_topic, "registry", accept=_valid_channel)
        self._channels: dict[str, tuple[dict[str, Any], Channel]] = {}  # channel id -> (registry row, Channel)
        self.health = self._table(settings.health_topic, "health")
        self.commits = Commits()
        self.records = SendRecords(store)
        self.lag = LagExporter(metrics.worker.lag, settings.group_id)
        self.outboxes = Outboxes(clients, app=PRODUCER, group_id=settings.group_id,
                                 progress_topic=settings.progress_topic, commits=self.commits, metrics=metrics.outbox)
        self._consumer: Consumer | None = None
        self._stopping = asyncio.Event()
        # aiokafka may hand out records of a partition while its assignment callback still runs:
        # intake and rebalances take turns. Flushes run beside intake (outbox.py locks each partition).
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._last_poll: float | None = None
        self._held = 0  # commands held in lanes at the last gauge export (backpressure)
        self._tables: list[asyncio.Task[None]] = []
        self.outputs = Outputs(self.outboxes, results_topic=settings.results_topic,
                               retry_topic=settings.retry_topic, dead_letters=self._dead_letters(),
                               metrics=metrics, clock=clock)
        self.delivery = self._delivery()
        self.lanes = Lanes(delivery=self.delivery, outputs=self.outputs, clock=clock, rules=LaneRules(
            is_open=lambda channel_id: is_open(self.health.get(channel_id),
                                               send_when_unknown=settings.send_when_health_unknown),
            pacing=self._pacing if settings.pacing_enabled else None,
            max_queue=settings.max_queue_per_channel,
            drain_timeout=settings.http_timeout_seconds * settings.attempts_in_place,
            draw=random.random,
        ))
        self.health.on_update = lambda channel_id, _: self.lanes.wake(channel_id)
        self.intake = Intake(retry_topic=settings.retry_topic, channel=self._channel, records=self.records,
                             lanes=self.lanes, outputs=self.outputs, commits=self.commits, metrics=metrics,
                             clock=clock, max_hold=settings.max_hold_seconds, trace=trace)

    # --- wiring ---------------------------------------------------------------------------------
    def _table(self, topic: str, name: str, **options: Any) -> TopicTable:
        rejected = self.metrics.worker.table_rejected.labels(table=name)
        return TopicTable(self.clients, topic, on_rejected=rejected.inc, clock=self.clock, **options)

    def _dead_letters(self) -> dict[str, DeadLetterWriter]:
        """Bad commands from either input go to the commands topic's DLQ; counted by the stage that refused them."""
        dlq = dlq_name(self.settings.commands_topic)
        return {stage.stage: DeadLetterWriter(PRODUCER, route=lambda _: dlq, clock=self.clock,
                                              on_written=stage.dead_letter)
                for stage in (self.metrics.intake, self.metrics.delivery)}

    def _delivery(self) -> Delivery:
        s = self.settings
        policy = RetryPolicy(s.attempts_in_place, s.retry_rounds, s.retry_delay_seconds,
                             Backoff(first=s.backoff_base_seconds, cap=s.backoff_cap_seconds))
        return Delivery(send=self.client.send, idempotent=self.client.idempotent, records=self.records,
                        outputs=self.outputs, commits=self.commits, metrics=self.metrics, clock=self.clock,
                        policy=policy, max_in_flight=s.max_in_flight, loop=self.loop, trace=self.trace)

    def _channel(self, channel_id: str) -> Channel | None:
        """The registry row as a Channel, built once per row: every queued job of a channel shares it
        (a Channel is frozen; a new row from the registry topic is a new object, so it is rebuilt)."""
        row = self.registry.get(channel_id)
        if row is None:
            self._channels.pop(channel_id, None)
            return None
        cached = self._channels.get(channel_id)
        if cached is not None and cached[0] is row:
            return cached[1]
        channel = Channel.from_dict(row)
        self._channels[channel_id] = (row, channel)
        return channel

    def _pacing(self, channel: Channel) -> PacingRule:
        return self.client.providers[channel.provider].pacing(channel.pacing, self.settings.pacing_defaults)

    # --- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self.lanes.stopping.set()
        self.delivery.stopping = True

    def is_ready(self) -> bool:
        return (self.registry.loaded.is_set() and self.health.loaded.is_set() and self._last_poll is not None
                and self.clock.monotonic() - self._last_poll < READY_POLL_SECONDS)

    async def run(self) -> None:
        try:
            if await self.start():
                while not self._stopping.is_set():
                    await self.step()
        finally:
            await self.close()

    async def start(self) -> bool:
        """Tables loaded, then the group consumer; False if stopped while loading."""
        self._tables = [asyncio.create_task(self.registry.run()), asyncio.create_task(self.health.run())]
        if not await self._wait_for_tables():
            return False
        await self.outboxes.start()
        consumer = self.clients.group_consumer(self.settings.group_id, max_poll_records=1000,
                                               max_partition_fetch_bytes=self.settings.max_partition_fetch_bytes)
        await consumer.start()
        self._consumer = consumer
        consumer.subscribe([self.settings.commands_topic, self.settings.retry_topic], listener=RebalanceAdapter(self))
        self._flusher = asyncio.create_task(self._flush_every_interval(consumer), name="flusher")
        return True

    async def step(self) -> None:
        """One poll: queue what arrived (the flusher commits it)."""
        consumer = self._require_consumer()
        self._apply_backpressure(consumer)
        batches = await consumer.getmany(timeout_ms=100, max_records=1000)
        self._last_poll = self.clock.monotonic()
        async with self._lock:
            for tp, records in batches.items():
                if self.commits.owns(tp):
                    await self.intake.accept_batch(tp, records)

    async def _flush_every_interval(self, consumer: Consumer) -> None:
        """Commit each partition's finished work every interval, off the poll loop; once more when stopping."""
        while not self._stopping.is_set():
            await self.clock.wait(self._stopping, self.settings.commit_interval_seconds)
            try:
                await self.outboxes.flush()
                await self._export_gauges(consumer)
            except Exception:  # a flush that fails oddly is retried next interval; the worker keeps going
                log.exception("flush failed")

    async def close(self) -> None:
        """Let sends in progress finish, commit what is done, leave the group, stop the clients."""
        if self._flusher is not None:
            self._stopping.set()
            with contextlib.suppress(Exception):
                await self._flusher
            self._flusher = None
        if self._consumer is not None:
            async with self._lock:
                await self.delivery.cancel_waits()
                await self.lanes.drain(list(self.commits.trackers))
                await self.outboxes.release(list(self.outboxes.boxes))
            await self._consumer.stop()
            self._consumer = None
        for table in (self.registry, self.health):
            table.stop()
        for task in self._tables:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await self.client.close()
        if self.trace is not None:
            self.trace.close()
        self._last_poll = None

    def _require_consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("dispatcher not started")
        return self._consumer

    async def _wait_for_tables(self) -> bool:
        while not (self.registry.loaded.is_set() and self.health.loaded.is_set()):
            for task in self._tables:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if self._stopping.is_set():
                return False
            await self.clock.sleep(TABLE_WAIT_SECONDS)
        return True

    def _apply_backpressure(self, consumer: Consumer) -> None:
        """Pause fetching while enough waits: max_buffered commands in the lanes in all, max_buffered_sendable
        that are not held (held ones, counted at the last gauge export, wait for their channel, not for us),
        or max_unflushed outputs for the outboxes' next transactions (commits behind the sends). Resume once
        the sendable commands and the unflushed outputs are both down to half, so that intake reads whole
        polls, not a trickle."""
        s = self.settings
        assigned = list(consumer.assignment())
        buffered = self.lanes.buffered
        sendable = buffered - self._held
        unflushed = self.outboxes.waiting()
        if buffered >= s.max_buffered or sendable >= s.max_buffered_sendable or unflushed >= s.max_unflushed:
            consumer.pause(*assigned)
        elif (consumer.paused() and sendable <= s.max_buffered_sendable // 2
              and unflushed <= s.max_unflushed // 2):
            consumer.resume(*assigned)

    # --- offsets and rebalance ------------------------------------------------------------------
    async def partitions_assigned(self, partitions: list[Any]) -> None:
        async with self._lock:
            await self.outboxes.assign(partitions)
            self.commits.assign(partitions)

    async def partitions_revoked(self, partitions: list[Any]) -> None:
        """Sends in progress finish, what is finished commits, the rest (echo waits too) is the next owner's."""
        async with self._lock:
            await self.delivery.cancel_waits(partitions)
            await self.lanes.drain(partitions)
            await self.outboxes.release(partitions)
            self.commits.revoke(partitions)

    async def _export_gauges(self, consumer: Consumer) -> None:
        self.lanes.forget_idle_pacers()
        queued, held, paced = self.lanes.counts()
        self._held = held
        self.metrics.held.set(held)
        self.metrics.queued.set(queued)
        self.metrics.paced.set(paced)
        self.metrics.unflushed.set(self.outboxes.waiting())
        self.metrics.table_rows("registry").set(len(self.registry.rows))
        self.metrics.table_rows("health").set(len(self.health.rows))
        partitions = list(self.commits.trackers)
        await self.lag.export(consumer, partitions, {tp: self.commits.position(tp) for tp in partitions})


def _valid_channel(row: dict[str, Any]) -> bool:
    try:
        Channel.from_dict(row)
    except (KeyError, TypeError):
        return False
    return True
