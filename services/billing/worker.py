"""billing's shell: lifecycle topic in, invoice topic out, through the transactional processor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry

from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.decode import parse_object
from apiplus.errors import ErrorCode, PermanentError
from apiplus.kafka import ClientFactory, KafkaClientConfig, KafkaClients
from apiplus.processor import Output, PartitionState, ProcessorConfig, TransactionalProcessor
from apiplus.schemas import schema_dir, validate
from services.billing.core import INPUT_TYPES, BillingRules, TenantState, apply, close_invoice, due_closing
from services.billing.inputs import quick_check
from services.billing.metrics import BillingMetrics
from services.billing.pricing import Catalog
from services.billing.settings import BillingSettings

log = logging.getLogger("apiplus.billing")


@cache
def _quick_check(kind: str) -> Callable[[dict[str, Any]], bool] | None:
    return quick_check(orjson.loads((schema_dir() / f"{kind}.json").read_bytes()))


def parse_input(raw: bytes | None) -> dict[str, Any]:
    """Decode and validate one lifecycle event against its schema.

    An event the schema's quick check accepts is valid; any other goes through the full validator,
    which accepts it or raises the error naming the first offending field (see services.billing.inputs)."""
    event = parse_object(raw)
    kind = event.get("type")
    if kind not in INPUT_TYPES:
        raise PermanentError(ErrorCode.UNKNOWN_EVENT, f"unknown lifecycle event type {kind!r}", field="type")
    quick = _quick_check(kind)
    if quick is None or not quick(event):
        validate(kind, event)
    return event


class OutputPartitions:
    """Each tenant's partition of the invoice topic, computed once per tenant the way aiokafka's default
    partitioner computes it for the tenant key (murmur2, as the Java client), so that the producer does
    not hash the key and rebuild the topic's set of available partitions for every charge (about 7% of
    the worker's CPU in its profile; docs/bench-notes/s3-billing.md).

    The partition count is asked once, at the first batch (again at most every `retry_seconds` while the
    topic's metadata cannot be had; meanwhile outputs are keyed only and the producer partitions them).
    It is not asked again while the worker runs: partitions are only ever added, so the partitions it
    computed stay valid and all of a tenant's outputs keep going to one partition; after partitions are
    added to the invoice topic, a restart moves tenants to the partitions every other producer uses."""

    def __init__(self, clients: ClientFactory | None, topic: str, clock: Clock = SYSTEM_CLOCK,
                 retry_seconds: float = 60.0) -> None:
        self._clients = clients
        self._topic = topic
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._next_try = float("-inf")
        self.count: int | None = None
        self._of: dict[bytes, int] = {}

    async def learn(self) -> None:
        if self.count is not None or self._clients is None or self._clock.monotonic() < self._next_try:
            return
        self._next_try = self._clock.monotonic() + self._retry_seconds
        try:
            found = await self._clients.partitions_for(self._topic)
        except (KafkaError, OSError) as exc:
            log.warning("invoice topic metadata unavailable; the producer partitions outputs",
                        extra={"topic": self._topic, "error": type(exc).__name__})
            return
        if found and found == list(range(len(found))):
            self.count = len(found)

    def of(self, key: bytes) -> int | None:
        """The key's partition, or None (the producer's partitioner decides) until the count is known."""
        if self.count is None:
            return None
        partition = self._of.get(key)
        if partition is None:
            partition = self._of[key] = (murmur2(key) & 0x7FFFFFFF) % self.count
        return partition


class BillingHandler:
    def __init__(self, settings: BillingSettings, rules: BillingRules, metrics: BillingMetrics,
                 partitions: OutputPartitions | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.grace = timedelta(seconds=settings.due_day_grace_seconds)
        self.partitions = partitions or OutputPartitions(None, settings.output_topic)

    async def prepare(self, records: Sequence[Any]) -> None:
        """A tenant's state is all in the partition's table; only the invoice topic's partition count is
        looked up, once."""
        await self.partitions.learn()

    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        event = parse_input(record.value)
        tenant_id = event["tenant_id"]
        if record.key is None or record.key != tenant_id.encode():
            raise PermanentError(
                ErrorCode.INVALID_VALUE,
                "record key must be the tenant_id, so one tenant's events share a partition",
                field="tenant_id",
            )
        # The table holds each tenant's TenantState decoded (see `build`): no decoding or encoding per
        # event; the batch's transaction encodes each changed tenant once.
        prior: TenantState | None = state.get(tenant_id)
        new, events = apply(prior, event, self.rules)
        counts = self.metrics.counts
        counts.events_in[event["type"]] += 1
        if new is prior:
            counts.duplicates += 1
        elif new is not None:
            state.put(tenant_id, new)
        return self._outputs(tenant_id, events)

    async def tick(self, state: PartitionState, now: float) -> Sequence[Output]:
        moment = datetime.fromtimestamp(now, tz=UTC)
        outputs: list[Output] = []
        overdue = 0
        tenants = 0
        channels = 0
        for tenant_id in sorted(state.keys()):
            tenant: TenantState = state.get(tenant_id)
            tenants += 1
            channels += len(tenant.active)
            closing = due_closing(tenant, moment, self.grace)
            if closing is None:
                continue
            if not self.settings.due_day_timer:
                overdue += 1
                continue
            invoice_id, due_at, period = closing
            new, events = close_invoice(tenant, invoice_id, due_at, self.rules, "due_day_timer", period)
            state.put(tenant_id, new)
            outputs += self._outputs(tenant_id, events)
        self.metrics.overdue_closings.set(overdue)
        self.metrics.tenants.set(tenants)
        self.metrics.active_channels.set(channels)
        return outputs

    def _outputs(self, tenant_id: str, events: list[dict[str, Any]]) -> list[Output]:
        key = tenant_id.encode()
        counts = self.metrics.counts
        for event in events:
            counts.events_out[event["type"]] += 1
            if event["type"] == "channel.charged":
                counts.charged_cents += event["amount_cents"]
            elif event["type"] == "invoice.closed":
                counts.invoiced_cents += event["total_cents"]
                self.metrics.last_close_timestamp.set_to_current_time()
        topic, partition = self.settings.output_topic, self.partitions.of(key)
        return [Output(topic, orjson.dumps(e), key=key, partition=partition) for e in events]


def build(
    settings: BillingSettings,
    registry: CollectorRegistry,
    clients: ClientFactory | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> TransactionalProcessor:
    """The billing worker; `clients` and `clock` default to the real ones (tests pass the harness's)."""
    rules = BillingRules(catalog=Catalog.load(settings.catalog_path), notice_days=settings.notice_days)
    metrics = BillingMetrics(registry)
    config = ProcessorConfig(
        app="apiplus-billing",
        group_id=settings.group_id,
        topics=[settings.input_topic],
        changelog_topic=settings.state_topic,
        tick_interval=settings.tick_seconds,
        max_batch=settings.max_batch,
        # Tenants stay decoded in the partition's table; TenantState is immutable, so an aborted
        # batch's changes are dropped by PartitionState.rollback without touching the committed ones.
        state_encode=TenantState.encode,
        state_decode=TenantState.decode,
    )
    clients = clients or KafkaClients(KafkaClientConfig.from_settings(settings, "apiplus-billing"))
    handler = BillingHandler(settings, rules, metrics, OutputPartitions(clients, settings.output_topic, clock))
    return TransactionalProcessor(config, clients, handler, metrics.worker.stage("billing"), clock)
