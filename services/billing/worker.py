"""billing's shell: lifecycle topic in, invoice topic out, through the transactional processor."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
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


class BillingHandler:
    def __init__(self, settings: BillingSettings, rules: BillingRules, metrics: BillingMetrics) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.grace = timedelta(seconds=settings.due_day_grace_seconds)

    async def prepare(self, records: Sequence[Any]) -> None:
        """Nothing to fetch: a tenant's state is all in the partition's table."""

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
        # Keyed by tenant: the groundwork's batched produce puts each on the key's partition (murmur2, as
        # the producer's default partitioner), remembered per key (apiplus.kafka.types.send_batched).
        topic = self.settings.output_topic
        return [Output(topic, orjson.dumps(e), key=key) for e in events]


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
    handler = BillingHandler(settings, rules, metrics)
    return TransactionalProcessor(config, clients, handler, metrics.worker.stage("billing"), clock)
