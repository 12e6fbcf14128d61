"""dispatch's shell: commands in, one provider send and one terminal result per command out.

Records are queued per channel ("lanes") and finished out of partition order; the committed offset
of a partition is the first record not yet finished (apiplus.offsets), so a paced or held channel
never blocks the others and a crash redelivers only unfinished work.

The send record in Redis (`apiplus:dispatch:cmd:<command_id>`) makes the provider call happen once:
  absent -> `sending` (SET NX, before the request) -> `sent` (with the message id) -> `done` (result written)
A redelivered command that is `done` is skipped; `sent` re-emits its result; `sending` means a crash or
a timeout left the outcome unknown: it is sent again with the same Idempotency-Key where the provider
honours it, and otherwise ends as `failed` / `delivery_unknown` rather than risk a second message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from redis.exceptions import RedisError

from apiplus.decode import parse_object
from apiplus.dlq import dead_letter
from apiplus.envelope import deterministic_id, make_event, parse_rfc3339, rfc3339_from_epoch
from apiplus.errors import ErrorCode, PermanentError
from apiplus.kafka import KafkaClientConfig
from apiplus.offsets import OffsetTracker
from apiplus.redisio import RedisBatcher
from apiplus.table import TopicTable
from services.dispatch.core import Channel, Command, authorize, parse_command, render_command
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.providers import ProviderClient, SendFailed, SendUnavailable
from services.dispatch.settings import DispatchSettings

log = logging.getLogger("apiplus.dispatch")
PRODUCER = "apiplus-dispatch"
RECORD_KEY = "apiplus:dispatch:cmd:"
RETRY_HEADER = "x-apiplus-retry-round"
NOT_BEFORE_HEADER = "x-apiplus-not-before"
FINISHED_MEMORY = 100_000


@dataclass
class Job:
    tp: TopicPartition
    offset: int
    command: Command
    channel: Channel
    raw: bytes
    accepted_at: float
    retry_round: int = 0
    not_before: float = 0.0
    held_reported: bool = False
    record: dict[str, Any] | None = None  # the send record as read at intake


@dataclass
class Lane:
    """One channel's queue, worked by one task, in order."""

    channel_id: str
    jobs: collections.deque[Job] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # clear while a send is in progress
    next_at: float = 0.0
    sent_times: collections.deque[float] = field(default_factory=collections.deque)
    recipients: dict[str, float] = field(default_factory=dict)
    waiting: str | None = None  # "held" | "paced" while the lane waits


class Dispatcher:
    def __init__(
        self,
        settings: DispatchSettings,
        kafka: KafkaClientConfig,
        redis: aioredis.Redis,
        providers: ProviderClient,
        metrics: DispatchMetrics,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.redis = redis
        self.batcher = RedisBatcher(redis)
        self.providers = providers
        self.metrics = metrics
        self.registry = TopicTable(kafka, settings.registry_topic, accept=_valid_channel)
        self.health = TopicTable(kafka, settings.health_topic, on_update=self._health_changed)
        self.lanes: dict[str, Lane] = {}
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self.committed: dict[TopicPartition, int] = {}
        self._finished: dict[str, None] = {}  # command ids finished here, oldest first
        self._semaphore = asyncio.Semaphore(settings.max_in_flight)
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._buffered = 0
        self._last_poll = 0.0
        self._tables: list[asyncio.Task[None]] = []

    # --- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    def is_ready(self) -> bool:
        return (
            self.registry.loaded.is_set()
            and self.health.loaded.is_set()
            and self._consumer is not None
            and time.monotonic() - self._last_poll < 30
        )

    async def run(self) -> None:
        self._tables = [asyncio.create_task(self.registry.run()), asyncio.create_task(self.health.run())]
        self._producer = AIOKafkaProducer(**self.kafka.options(), enable_idempotence=True, acks="all", linger_ms=2)
        await self._producer.start()
        try:
            await self._wait_for_tables()
            consumer = AIOKafkaConsumer(
                **self.kafka.options(),
                group_id=self.settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=1000,
            )
            self._consumer = consumer
            await consumer.start()
            consumer.subscribe([self.settings.commands_topic, self.settings.retry_topic], listener=_Listener(self))
            last_commit = time.monotonic()
            while not self._stopping.is_set():
                self._apply_backpressure(consumer)
                batches = await consumer.getmany(timeout_ms=100, max_records=1000)
                self._last_poll = time.monotonic()
                for tp, records in batches.items():
                    if tp in self.trackers:
                        await self._accept_batch(tp, records)
                if time.monotonic() - last_commit >= self.settings.commit_interval_seconds:
                    await self._commit(consumer)
                    await self._export_gauges(consumer)
                    last_commit = time.monotonic()
            await self._drain(list(self.trackers))
            await self._commit(consumer)
            await consumer.stop()
        finally:
            for table in (self.registry, self.health):
                table.stop()
            for task in self._tables:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 5)
            await self._producer.stop()
            await self.providers.close()

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
        if self._buffered >= self.settings.max_buffered:
            consumer.pause(*assigned)
        elif consumer.paused():
            consumer.resume(*assigned)

    # --- intake ---------------------------------------------------------------------------------
    async def _accept_batch(self, tp: TopicPartition, records: list[Any]) -> None:
        """Decode a fetched batch, look up all its send records in one round trip, then queue each."""
        tracker = self.trackers[tp]
        source = "retry" if tp.topic == self.settings.retry_topic else "commands"
        decoded: list[tuple[Any, dict[str, Any]]] = []
        for record in records:
            tracker.add(record.offset)
            self.metrics.commands.labels(source=source).inc()
            try:
                decoded.append((record, parse_object(record.value)))
            except PermanentError as exc:
                await self._dead_letter(record, exc)
                tracker.done(record.offset)
        ids = [d["command_id"] if isinstance(d.get("command_id"), str) else "" for _, d in decoded]
        stored: dict[str, dict[str, Any]] = {}
        present = [i for i in ids if i]
        if present:
            values = await self._redis(lambda: self.redis.mget([RECORD_KEY + i for i in present]))
            stored = {i: orjson.loads(v) for i, v in zip(present, values, strict=True) if v is not None}
        for (record, data), command_id in zip(decoded, ids, strict=True):
            await self._accept(tp, record, data, stored.get(command_id))

    async def _accept(self, tp: TopicPartition, record: Any, data: dict[str, Any],
                      stored: dict[str, Any] | None) -> None:
        tracker = self.trackers[tp]
        from_retry = tp.topic == self.settings.retry_topic
        command_id = data.get("command_id") if isinstance(data.get("command_id"), str) else None
        channel_id = data.get("channel_id") if isinstance(data.get("channel_id"), str) else None
        try:
            command = parse_command(data)
            channel = self._channel(command)
            if not from_retry:
                authorize(command, data.get("token"), channel)
            elif channel is None or channel.status != "active":
                raise PermanentError(ErrorCode.CHANNEL_INACTIVE, "the channel is no longer active", "channel_id")
            assert channel is not None
            render_command(command, channel)  # refuse what the provider cannot carry before queueing
        except PermanentError as exc:
            self.metrics.rejects.labels(code=str(exc.code)).inc()
            if command_id and channel_id and await self._claim_terminal(command_id):
                await self._result(command_id, channel_id, "rejected", error=exc.as_dict())
            await self._dead_letter(record, exc)
            tracker.done(record.offset)
            return
        if stored is not None and stored.get("state") == "done":
            self.metrics.duplicates.inc()
            tracker.done(record.offset)
            return
        headers = dict(record.headers or ())
        job = Job(
            tp=tp, offset=record.offset, command=command, channel=channel, raw=record.value,
            accepted_at=time.time(),
            retry_round=int(headers.get(RETRY_HEADER, b"0") or 0),
            not_before=float(headers.get(NOT_BEFORE_HEADER, b"0") or 0),
            record=stored,
        )
        lane = self.lanes.get(command.channel_id)
        if lane is None:
            lane = self.lanes[command.channel_id] = Lane(command.channel_id)
            lane.idle.set()
        if len(lane.jobs) >= self.settings.max_queue_per_channel:
            await self._finish(job, "expired", error={"code": "queue_full", "field": None,
                                                      "message": "the channel's queue is full"})
            return
        lane.jobs.append(job)
        self._buffered += 1
        if job.retry_round == 0:
            await self._result(command.command_id, command.channel_id, "queued", wait=False)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._work(lane), name="lane")
        else:
            lane.wake.set()

    def _channel(self, command: Command) -> Channel | None:
        row = self.registry.get(command.channel_id)
        return Channel.from_dict(row) if row is not None else None

    # --- a channel's lane -----------------------------------------------------------------------
    async def _work(self, lane: Lane) -> None:
        while lane.jobs and not self._stopping.is_set():
            job = lane.jobs[0]
            expired = self._expiry(job)
            if expired is not None:
                await self._finish(lane.jobs.popleft(), "expired", error=expired)
                self._buffered -= 1
                continue
            if not self._is_open(job.channel.channel_id):
                for waiting in list(lane.jobs):
                    if not waiting.held_reported:
                        waiting.held_reported = True
                        await self._result(waiting.command.command_id, waiting.channel.channel_id, "held",
                                           wait=False)
                await self._wait(lane, "held", self._hold_deadline(job) - time.time())
                continue
            delay = self._pace_delay(lane, job)
            if delay > 0:
                await self._wait(lane, "paced", delay)
                continue
            lane.idle.clear()
            try:
                await self._deliver(job)
            finally:
                lane.idle.set()
            lane.jobs.popleft()
            self._buffered -= 1
            self._paced(lane, job)
        if not lane.jobs and self.lanes.get(lane.channel_id) is lane:
            del self.lanes[lane.channel_id]

    async def _wait(self, lane: Lane, why: str, seconds: float) -> None:
        lane.waiting = why
        lane.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lane.wake.wait(), timeout=max(0.0, seconds))
        lane.waiting = None

    def _expiry(self, job: Job) -> dict[str, Any] | None:
        now = time.time()
        if job.command.not_after is not None and parse_rfc3339(job.command.not_after).timestamp() <= now:
            return {"code": "not_after_passed", "field": "not_after", "message": "the command's not_after passed"}
        if now >= job.accepted_at + self.settings.max_hold_seconds:
            return {"code": "held_too_long", "field": None, "message": "held longer than the configured limit"}
        return None

    def _hold_deadline(self, job: Job) -> float:
        deadline = job.accepted_at + self.settings.max_hold_seconds
        if job.command.not_after is not None:
            deadline = min(deadline, parse_rfc3339(job.command.not_after).timestamp())
        return deadline

    def _is_open(self, channel_id: str) -> bool:
        row = self.health.get(channel_id)
        state = row.get("state") if row is not None else "unknown"
        if state == "unknown":  # never seen a connection event: as if there were no health row
            return self.settings.send_when_health_unknown
        return state == "open"

    def _health_changed(self, channel_id: str, _: dict[str, Any] | None) -> None:
        lane = self.lanes.get(channel_id)
        if lane is not None:
            lane.wake.set()

    # --- pacing ---------------------------------------------------------------------------------
    def _pace_delay(self, lane: Lane, job: Job) -> float:
        now = time.time()
        wait = max(0.0, job.not_before - now)
        if not self.settings.pacing_enabled:
            return wait
        wait = max(wait, lane.next_at - now)
        cap = int(job.channel.pacing.get("hourly_cap", self.settings.hourly_cap))
        while lane.sent_times and lane.sent_times[0] <= now - 3600:
            lane.sent_times.popleft()
        if len(lane.sent_times) >= cap:
            wait = max(wait, lane.sent_times[0] + 3600 - now)
        if job.channel.provider == "cloudapi":
            last = lane.recipients.get(job.command.to)
            if last is not None:
                wait = max(wait, last + self.settings.cloudapi_recipient_gap_ms / 1000 - now)
        return wait

    def _paced(self, lane: Lane, job: Job) -> None:
        if not self.settings.pacing_enabled:
            return
        now = time.time()
        lane.sent_times.append(now)
        pacing = job.channel.pacing
        if job.channel.provider == "cloudapi":
            gap = 1.0 / self.settings.cloudapi_rate_per_second
            lane.recipients[job.command.to] = now
            if len(lane.recipients) > 1000:
                lane.recipients = {k: v for k, v in lane.recipients.items() if v > now - 60}
        else:
            base = int(pacing.get("min_gap_ms", self.settings.min_gap_ms))
            jitter = int(pacing.get("jitter_ms", self.settings.jitter_ms))
            gap = (base + random.uniform(0, jitter)) / 1000
        lane.next_at = now + gap

    def _backoff(self, attempt: int) -> float:
        return float(min(self.settings.backoff_cap_seconds, self.settings.backoff_base_seconds * 2 ** (attempt - 1)))

    # --- delivery -------------------------------------------------------------------------------
    async def _deliver(self, job: Job) -> None:
        """Send at most once, finish the job with its terminal result (or park it in the retry topic)."""
        command, channel = job.command, job.channel
        # The intake read the record for the whole batch; a copy of the same command earlier in this
        # lane has since finished it, which only this process can have done.
        record = job.record if command.command_id not in self._finished else {"state": "done"}
        state = record.get("state") if record else None
        if state == "done":
            self.metrics.duplicates.inc()
            self.trackers_done(job)
            return
        if state == "sent":
            await self._finish(job, "sent", message_id=record.get("message_id"))  # type: ignore[union-attr]
            return
        if state == "sending" and not self.providers.idempotent(channel.provider):
            await self._finish(job, "failed", error={
                "code": "delivery_unknown", "field": None,
                "message": "an earlier attempt may have reached the provider; not sent again",
            })
            return
        await self._set_record(command.command_id, {"state": "sending"})
        request = render_command(command, channel)
        for attempt in range(1, self.settings.attempts_in_place + 1):
            try:
                async with self._semaphore:
                    self.metrics.in_flight.inc()
                    try:
                        message_id, elapsed = await self.providers.send(channel.provider, request, command.command_id)
                    finally:
                        self.metrics.in_flight.dec()
            except SendFailed as exc:
                self.metrics.sends.labels(provider=channel.provider, outcome="failed").inc()
                await self._finish(job, "failed", error={
                    "code": "provider_rejected", "field": None, "provider_status": exc.status,
                    "message": f"the provider refused the request with HTTP {exc.status}",
                })
                return
            except SendUnavailable as exc:
                self.metrics.sends.labels(provider=channel.provider, outcome="unavailable").inc()
                if exc.ambiguous and not self.providers.idempotent(channel.provider):
                    await self._finish(job, "failed", error={
                        "code": "delivery_unknown", "field": None, "provider_status": exc.status,
                        "message": f"{exc.reason}: the message may have been delivered; not sent again",
                    })
                    return
                if not exc.ambiguous:
                    await self._set_record(command.command_id, {"state": "retrying"})
                if attempt < self.settings.attempts_in_place:
                    self.metrics.retries.labels(where="in_place").inc()
                    await asyncio.sleep(exc.retry_after if exc.retry_after is not None else self._backoff(attempt))
                    continue
                await self._park(job, exc)
                return
            self.metrics.sends.labels(provider=channel.provider, outcome="sent").inc()
            self.metrics.send_duration.labels(provider=channel.provider).observe(elapsed)
            await self._set_record(command.command_id, {"state": "sent", "message_id": message_id})
            await self._finish(job, "sent", message_id=message_id)
            return
        raise AssertionError("unreachable")

    async def _park(self, job: Job, exc: SendUnavailable) -> None:
        """In-place retries exhausted: to the retry topic (order for this one command is given up), or fail."""
        if job.retry_round >= self.settings.retry_rounds:
            error = PermanentError(ErrorCode.RETRIES_EXHAUSTED, f"provider unavailable: {exc.reason}")
            await self._write_dead_letter(job.tp.topic, job.tp.partition, job.offset, job.raw,
                                          job.channel.channel_id.encode(), error)
            await self._finish(job, "failed", error={**error.as_dict(), "provider_status": exc.status})
            return
        self.metrics.retries.labels(where="retry_topic").inc()
        body = orjson.loads(job.raw)
        body.pop("token", None)  # authorised already; the token never travels further
        not_before = time.time() + self.settings.retry_delay_seconds
        assert self._producer is not None
        await (await self._producer.send(
            self.settings.retry_topic,
            key=job.channel.channel_id.encode(),
            value=orjson.dumps(body),
            headers=[(RETRY_HEADER, str(job.retry_round + 1).encode()), (NOT_BEFORE_HEADER, str(not_before).encode())],
        ))
        self.trackers_done(job)

    async def _finish(self, job: Job, state: str, *, message_id: str | None = None,
                      error: dict[str, Any] | None = None) -> None:
        await self._result(job.command.command_id, job.channel.channel_id, state, message_id=message_id, error=error)
        await self._set_record(job.command.command_id, {"state": "done", "terminal": state, "message_id": message_id})
        self._finished[job.command.command_id] = None
        if len(self._finished) > FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]
        self.trackers_done(job)

    def trackers_done(self, job: Job) -> None:
        tracker = self.trackers.get(job.tp)
        if tracker is not None:
            tracker.done(job.offset)

    # --- the send record ------------------------------------------------------------------------
    async def _set_record(self, command_id: str, value: dict[str, Any]) -> None:
        await self._redis(lambda: self.batcher.execute("SET", RECORD_KEY + command_id, orjson.dumps(value),
                                                       "EX", self.settings.dedupe_ttl_seconds))

    async def _claim_terminal(self, command_id: str) -> bool:
        """For refusals: write the record unless the command already has a terminal result."""
        value = orjson.dumps({"state": "done", "terminal": "rejected"})
        return bool(await self._redis(lambda: self.redis.set(RECORD_KEY + command_id, value, nx=True,
                                                             ex=self.settings.dedupe_ttl_seconds)))

    async def _redis(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Redis holds the exactly-once record: wait an outage out rather than guess."""
        attempt = 0
        while True:
            try:
                return await operation()
            except (RedisError, OSError) as exc:
                attempt += 1
                self.metrics.redis_errors.inc()
                log.warning("redis unavailable; retrying", extra={"attempt": attempt, "error": type(exc).__name__})
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))

    # --- outputs --------------------------------------------------------------------------------
    async def _result(self, command_id: str, channel_id: str, state: str, *, message_id: str | None = None,
                      error: dict[str, Any] | None = None, wait: bool = True) -> None:
        """Write a result; terminal ones are acknowledged before the send record says `done`."""
        payload: dict[str, Any] = {"command_id": command_id, "channel_id": channel_id, "state": state}
        if message_id:
            payload["provider_message_id"] = message_id
        if error is not None:
            payload["error"] = error
        event = make_event(
            "dispatch.result",
            event_id=deterministic_id("dispatch.result", command_id, state),
            occurred_at=rfc3339_from_epoch(time.time()),
            producer=PRODUCER,
            **payload,
        )
        assert self._producer is not None
        delivery = await self._producer.send(self.settings.results_topic, key=channel_id.encode(),
                                             value=orjson.dumps(event))
        if wait:
            await delivery
        else:
            delivery.add_done_callback(_log_failed_delivery)
        self.metrics.results.labels(state=state).inc()

    async def _dead_letter(self, record: Any, error: PermanentError) -> None:
        await self._write_dead_letter(record.topic, record.partition, record.offset, record.value, record.key, error)

    async def _write_dead_letter(self, topic: str, partition: int, offset: int, raw: bytes | None,
                                 key: bytes | None, error: PermanentError) -> None:
        self.metrics.dead_letters.labels(code=str(error.code)).inc()
        value = dead_letter(producer=PRODUCER, topic=topic, partition=partition, offset=offset, raw=raw, error=error)
        assert self._producer is not None
        await (await self._producer.send(f"{self.settings.commands_topic}.dlq", key=key, value=orjson.dumps(value)))

    # --- offsets and rebalance ------------------------------------------------------------------
    async def _commit(self, consumer: AIOKafkaConsumer, only: Sequence[TopicPartition] | None = None) -> None:
        offsets = {}
        for tp in only if only is not None else list(self.trackers):
            tracker = self.trackers.get(tp)
            position = tracker.committable() if tracker else None
            if position is not None and position != self.committed.get(tp):
                offsets[tp] = position
        if offsets:
            await consumer.commit(offsets)
            self.committed.update(offsets)

    async def _drain(self, tps: Sequence[TopicPartition]) -> None:
        """Give up partitions: let sends in progress finish, drop what has not started."""
        revoked = set(tps)
        for channel_id, lane in list(self.lanes.items()):
            if not any(job.tp in revoked for job in lane.jobs):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    lane.idle.wait(), self.settings.http_timeout_seconds * self.settings.attempts_in_place
                )
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lane.task
            kept = collections.deque(job for job in lane.jobs if job.tp not in revoked)
            self._buffered -= len(lane.jobs) - len(kept)
            lane.jobs = kept
            if kept:
                lane.task = asyncio.create_task(self._work(lane), name="lane")
            else:
                self.lanes.pop(channel_id, None)

    async def _revoked(self, tps: list[TopicPartition]) -> None:
        await self._drain(tps)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(self._consumer, only=tps)
        for tp in tps:
            self.trackers.pop(tp, None)
            self.committed.pop(tp, None)

    def _assigned(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.trackers.setdefault(tp, OffsetTracker())

    async def _export_gauges(self, consumer: AIOKafkaConsumer) -> None:
        held = queued = paced = 0
        for lane in self.lanes.values():
            queued += len(lane.jobs)
            if lane.waiting == "held":
                held += len(lane.jobs)
            elif lane.waiting == "paced":
                paced += 1
        self.metrics.held.set(held)
        self.metrics.queued.set(queued)
        self.metrics.paced.set(paced)
        self.metrics.table_rows.labels(table="registry").set(len(self.registry.rows))
        self.metrics.table_rows.labels(table="health").set(len(self.health.rows))
        for tp, tracker in self.trackers.items():
            end = consumer.highwater(tp)
            committed = tracker.committable()
            if end is not None and committed is not None:
                self.metrics.lag.labels(consumergroup=self.settings.group_id, topic=tp.topic,
                                        partition=str(tp.partition)).set(max(0, end - committed))


def _log_failed_delivery(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("progress result not delivered", extra={"error": type(delivery.exception()).__name__})


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
        await self.dispatcher._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.dispatcher._assigned(list(assigned))
