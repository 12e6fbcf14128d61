"""Every Kafka topic of the project, declared once. The AsyncAPI document in schemas/ must agree."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PARTITIONS = 6
WEEK_MS = 7 * 24 * 3600 * 1000
DLQ_SUFFIX = ".dlq"


def dlq_name(topic: str) -> str:
    """The dead-letter topic of an input topic: `<topic>.dlq`."""
    return topic + DLQ_SUFFIX


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    partitions: int = DEFAULT_PARTITIONS
    compacted: bool = False
    retention_ms: int = WEEK_MS
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dlq(self) -> str:
        return dlq_name(self.name)

    def config(self) -> dict[str, str]:
        cfg = {"retention.ms": str(-1 if self.compacted else self.retention_ms)}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
            cfg["min.compaction.lag.ms"] = "60000"
        cfg.update(self.extra)
        return cfg


# ingest
INGEST_RAW = Topic("apiplus.ingest.raw.v1", key="channel id when the publisher knows it, else none")
INGEST_EVENTS = Topic("apiplus.ingest.events.v1", key="channel_id")
INGEST_CHANNEL_STATE = Topic("apiplus.ingest.channel-state.v1", key="channel_id", compacted=True)
INGEST_HEALTH = Topic("apiplus.ingest.health.v1", key="channel_id", compacted=True)
# dispatch
REGISTRY_CHANNELS = Topic("apiplus.registry.channels.v1", key="channel_id", compacted=True)
DISPATCH_COMMANDS = Topic("apiplus.dispatch.commands.v1", key="channel_id")
DISPATCH_RETRY = Topic("apiplus.dispatch.retry.v1", key="channel_id")
DISPATCH_RESULTS = Topic("apiplus.dispatch.results.v1", key="channel_id")
DISPATCH_PROGRESS = Topic("apiplus.dispatch.progress.v1", key="input topic:partition", compacted=True)
# billing
BILLING_LIFECYCLE = Topic("apiplus.billing.lifecycle.v1", key="tenant_id")
BILLING_STATE = Topic("apiplus.billing.state.v1", key="tenant_id", compacted=True)
BILLING_INVOICES = Topic("apiplus.billing.invoices.v1", key="tenant_id", retention_ms=-1)

TOPICS: tuple[Topic, ...] = (
    INGEST_RAW,
    INGEST_EVENTS,
    INGEST_CHANNEL_STATE,
    INGEST_HEALTH,
    REGISTRY_CHANNELS,
    DISPATCH_COMMANDS,
    DISPATCH_RETRY,
    DISPATCH_RESULTS,
    DISPATCH_PROGRESS,
    BILLING_LIFECYCLE,
    BILLING_STATE,
    BILLING_INVOICES,
)
# Inputs that bad records can arrive on; each gets `<topic>.dlq`.
DLQ_SOURCES: tuple[Topic, ...] = (INGEST_RAW, INGEST_EVENTS, DISPATCH_COMMANDS, BILLING_LIFECYCLE)
# Inputs without a DLQ of their own: their bad records go to another input's. (ingest's Evolution
# topics, named by a pattern setting, go to the raw topic's DLQ: see services/ingest/worker.py.)
DLQ_SHARED: dict[str, Topic] = {DISPATCH_RETRY.name: DISPATCH_COMMANDS}


def dead_letter_topic(source: str) -> str:
    """Where a bad record read from `source` goes."""
    shared = DLQ_SHARED.get(source)
    return shared.dlq if shared is not None else dlq_name(source)


def all_topic_specs(partitions: int | None = None) -> list[tuple[str, int, dict[str, str]]]:
    specs = [(t.name, partitions or t.partitions, t.config()) for t in TOPICS]
    specs += [(t.dlq, partitions or t.partitions, {"retention.ms": str(4 * WEEK_MS)}) for t in DLQ_SOURCES]
    return specs


async def ensure_topics(bootstrap: str, specs: list[tuple[str, int, dict[str, str]]] | None = None) -> int:
    """Create whatever topics are missing; returns how many were created."""
    from aiokafka.admin import NewTopic  # the topic table itself imports no Kafka client

    from apiplus.kafka import KafkaClientConfig, KafkaClients

    specs = specs if specs is not None else all_topic_specs()
    admin = KafkaClients(KafkaClientConfig(bootstrap, client_id="apiplus-topics")).admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=parts, replication_factor=1, topic_configs=cfg)
            for name, parts, cfg in specs
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        return len(missing)
    finally:
        await admin.close()
