"""ingest's shell: two transactional stages in one process.

1. normalise: raw gateway topics -> canonical events (keyed by channel_id), duplicates dropped via Redis.
2. health: canonical events (now partitioned by channel) -> per-channel health state (compacted
   changelog) and `channel.health` events on change; a copy of each channel's health in Redis.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.decode import parse_object
from apiplus.dlq import DeadLetterWriter
from apiplus.errors import ErrorCode, PermanentError
from apiplus.kafka import ClientFactory, KafkaClientConfig, KafkaClients
from apiplus.processor import Output, PartitionState, ProcessorConfig, TransactionalProcessor
from apiplus.schemas import validate
from apiplus.topics import dlq_name
from services.ingest.core import PRODUCER, Context, Outcome, normalize
from services.ingest.health import CONDITIONS, STATES, ChannelHealth, HealthRules, observe, settle
from services.ingest.loop import ReplyCorrelator
from services.ingest.metrics import IngestMetrics
from services.ingest.seen import SeenMarkers, position_marker
from services.ingest.settings import IngestSettings

log = logging.getLogger("apiplus.ingest")
DIALECT_HEADERS = ("x-apiplus-dialect", "dialect")
HEALTH_KEY = "apiplus:health:"


def dialect_header(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    for key, value in headers or ():
        if key.lower() in DIALECT_HEADERS and value:
            return value.decode("utf-8", "replace").strip().lower()
    return None


def normalize_record(raw: bytes | None, ctx: Context, max_bytes: int) -> Outcome:
    """Decode, normalise and check against the schemas: the worker's and `normalize`'s one path.

    An event that breaks its schema is refused on its own, like any other bad item.
    """
    outcome = normalize(parse_object(raw, max_bytes), ctx)
    valid = []
    for event in outcome.events:
        try:
            validate(event["type"], event)
        except PermanentError as exc:
            outcome.errors.append(exc)
        else:
            valid.append(event)
    outcome.events = valid
    return outcome


class NormalizeHandler:
    def __init__(self, settings: IngestSettings, redis: aioredis.Redis, metrics: IngestMetrics,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        raw_dlq = dlq_name(settings.raw_topic)
        # Every raw source, Evolution's own topics included, dead-letters to one place; the processor
        # running this handler routes its own dead letters with the same writer's `route`.
        self.dead_letters = DeadLetterWriter(PRODUCER, route=lambda _topic: raw_dlq,
                                             on_written=metrics.worker.stage("normalize").dead_letter, clock=clock)
        self.replies = ReplyCorrelator(redis, metrics, settings.offer_window_seconds)
        self.seen = SeenMarkers(redis, settings.dedupe_window_seconds)
        self._prepared: dict[tuple[str, int, int], Outcome | PermanentError] = {}

    async def prepare(self, records: Sequence[Any]) -> None:
        """Normalise the batch and check all its event ids against Redis in one call."""
        self._prepared = {}
        for record in records:
            ctx = Context(dialect=dialect_header(record.headers), received_at_ms=record.timestamp,
                          evolution_clock=self.settings.evolution_clock)
            try:
                self._prepared[_position(record)] = normalize_record(record.value, ctx, self.settings.max_payload_bytes)
            except PermanentError as exc:
                self._prepared[_position(record)] = exc
        duplicates = await self._duplicates(records)
        for key, outcome in self._prepared.items():
            if isinstance(outcome, Outcome) and duplicates.get(key):
                outcome.events = [e for e in outcome.events if e["event_id"] not in duplicates[key]]
        await self._correlate()

    async def _correlate(self) -> None:
        """`in_reply_to` and typed answers for the batch's messages, one Redis round trip (docs/loop.md)."""
        outcomes = [o for o in self._prepared.values() if isinstance(o, Outcome) and o.events]
        if not outcomes:
            return
        correlated = iter(await self.replies.apply([e for o in outcomes for e in o.events]))
        for outcome in outcomes:
            outcome.events = [next(correlated) for _ in outcome.events]

    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        prepared = self._prepared.pop(_position(record), None)
        if prepared is None:  # not prepared (a handler used on its own): do it for this record
            await self.prepare([record])
            prepared = self._prepared.pop(_position(record))
        if isinstance(prepared, PermanentError):
            raise prepared
        refusal = prepared.refusal()
        if refusal is not None and not prepared.events and not prepared.ignored:
            raise refusal  # the whole record is refused: the processor dead-letters it
        for ignored in prepared.ignored:
            self.metrics.ignored(prepared.source, ignored.reason).inc()
        outputs = []
        for event in prepared.events:
            self.metrics.events(event["source"], event["type"]).inc()
            outputs.append(Output(self.settings.events_topic, orjson.dumps(event), key=event["channel_id"].encode()))
        if refusal is not None:  # some items refused, the others published: the record is dead-lettered too
            outputs.append(self.dead_letters.output(record, refusal))
        return outputs

    async def _duplicates(self, records: Sequence[Any]) -> dict[tuple[str, int, int], set[str]]:
        """Event ids (of every type) first seen at another record; seen at this very record means a retry
        (services/ingest/seen.py). One Redis call for the whole batch."""
        keyed = [
            (key, event)
            for key, outcome in self._prepared.items()
            if isinstance(outcome, Outcome)
            for event in outcome.events
        ]
        elsewhere = await self.seen.seen_elsewhere([event["event_id"] for _, event in keyed],
                                                   [position_marker(*key) for key, _ in keyed])
        found: dict[tuple[str, int, int], set[str]] = {}
        for index in elsewhere:
            key, event = keyed[index]
            found.setdefault(key, set()).add(event["event_id"])
            self.metrics.duplicates(event["source"]).inc()
        return found

    async def tick(self, state: PartitionState, now: float) -> Sequence[Output]:
        return []


def _position(record: Any) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


class HealthHandler:
    def __init__(
        self, settings: IngestSettings, rules: HealthRules, redis: aioredis.Redis, metrics: IngestMetrics
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.redis = redis
        self.metrics = metrics
        self._census: dict[int, tuple[collections.Counter[str], collections.Counter[str]]] = {}
        # The Redis copy of each channel's health, written once per batch (last change per channel wins).
        self._copies: dict[str, bytes] = {}
        self._last: tuple[str, int, int] | None = None

    async def prepare(self, records: Sequence[Any]) -> None:
        """Nothing to look up per batch: a channel's health is all in the partition's table. Notes the
        batch's last record, after which the batch's Redis copies are written."""
        await self._write_copies()  # left by a batch that ended early
        self._last = _position(records[-1]) if records else None

    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        try:
            return self._observe(record, state)
        finally:
            if self._last is None or _position(record) == self._last:  # None: handled outside a prepared batch
                await self._write_copies()

    def _observe(self, record: Any, state: PartitionState) -> list[Output]:
        event = parse_object(record.value)
        channel_id = event.get("channel_id")
        if not isinstance(channel_id, str) or not isinstance(event.get("type"), str):
            raise PermanentError(ErrorCode.MISSING_FIELD, "canonical event without channel_id or type", "channel_id")
        before: ChannelHealth | None = state.get(channel_id)
        after, change = observe(before, event, self.rules)
        if after != before:
            state.put(channel_id, after)
        if event["type"] == "connection.update" and event["connection"]["state"] in ("closed", "logged_out"):
            self.metrics.disconnects(event["connection"].get("reason") or "unknown").inc()
        elif event["type"] == "qr.updated":
            self.metrics.qr_codes.inc()
        return self._publish(channel_id, change)

    async def tick(self, state: PartitionState, now: float) -> Sequence[Output]:
        moment = datetime.fromtimestamp(now, tz=UTC)
        outputs: list[Output] = []
        states: collections.Counter[str] = collections.Counter()
        conditions: collections.Counter[str] = collections.Counter()
        for channel_id in state.keys():  # noqa: SIM118 - PartitionState is not a dict
            h: ChannelHealth = state.get(channel_id)
            after, change = settle(h, h, moment, self.rules)
            if change is not None:
                state.put(channel_id, after)
                outputs += self._publish(channel_id, change)
            states[after.state] += 1
            conditions.update(after.conditions)
        self._census[state.partition] = (states, conditions)
        self._export_census()
        await self._write_copies()
        return outputs

    def _export_census(self) -> None:
        for name in STATES:
            self.metrics.channels_by_state.labels(state=name).set(sum(c[0][name] for c in self._census.values()))
        for name in CONDITIONS:
            self.metrics.channels_by_condition.labels(condition=name).set(
                sum(c[1][name] for c in self._census.values())
            )

    def _publish(self, channel_id: str, change: dict[str, Any] | None) -> list[Output]:
        if change is None:
            return []
        self.metrics.health_changes.inc()
        payload = orjson.dumps(change)
        self._copies[HEALTH_KEY + channel_id] = payload
        return [Output(self.settings.health_topic, payload, key=channel_id.encode())]

    async def _write_copies(self) -> None:
        """One MSET for the batch's changed channels, before its transaction commits (as each SET was)."""
        if not self._copies:
            return
        copies, self._copies = self._copies, {}
        try:
            await self.redis.mset(copies)
        except (RedisError, OSError):
            # The compacted topic is the source of truth; the Redis copy catches up on the next change.
            self.metrics.redis_errors.inc()


def build(
    settings: IngestSettings,
    registry: CollectorRegistry,
    redis: aioredis.Redis,
    clients: ClientFactory | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[TransactionalProcessor, TransactionalProcessor]:
    """The two stages; `clients` and `clock` default to the real ones (tests pass the harness's)."""
    metrics = IngestMetrics(registry)
    if clients is None:
        clients = KafkaClients(KafkaClientConfig.from_settings(settings, "apiplus-ingest"))
    pattern = None
    topics: list[str] = [settings.raw_topic]
    if settings.subscribe_evolution:
        pattern = f"^(?:{re.escape(settings.raw_topic)}|{settings.evolution_pattern})$"
        topics = []
    evolution = re.compile(settings.evolution_pattern)

    def is_external(topic: str) -> bool:
        return topic != settings.raw_topic and evolution.fullmatch(topic) is not None

    normalizer = NormalizeHandler(settings, redis, metrics, clock)
    normalise = TransactionalProcessor(
        ProcessorConfig(
            app="apiplus-ingest",
            group_id=settings.group_id,
            topics=topics,
            pattern=pattern,
            dlq_for=normalizer.dead_letters.route,
            lag_topic_label=lambda topic: "evolution.*" if is_external(topic) else topic,
        ),
        clients,
        normalizer,
        metrics.worker.stage("normalize"),
        clock,
    )
    rules = HealthRules(
        flapping_disconnects=settings.flapping_disconnects,
        flapping_window=timedelta(seconds=settings.flapping_window_seconds),
        qr_loop_codes=settings.qr_loop_codes,
        stale_after=timedelta(seconds=settings.stale_after_seconds),
    )
    health = TransactionalProcessor(
        ProcessorConfig(
            app="apiplus-ingest-health",
            group_id=settings.health_group_id,
            topics=[settings.events_topic],
            changelog_topic=settings.state_topic,
            tick_interval=settings.tick_seconds,
            # The table holds decoded ChannelHealth values; each changed channel is encoded once per batch.
            state_encode=ChannelHealth.encode,
            state_decode=ChannelHealth.decode,
        ),
        clients,
        HealthHandler(settings, rules, redis, metrics),
        metrics.worker.stage("health"),
        clock,
    )
    return normalise, health
