"""dispatch's Prometheus metrics (apiplus_dispatch_*), against an injected registry. No channel ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from apiplus.metrics import LATENCY_BUCKETS, WorkerMetrics


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commands = Counter(
            "apiplus_dispatch_commands_total", "Commands read, by source topic kind.", ["source"], registry=registry,
        )
        self.sends = Counter(
            "apiplus_dispatch_sends_total", "Provider send attempts, by provider and outcome.",
            ["provider", "outcome"], registry=registry,
        )
        self.send_duration = Histogram(
            "apiplus_dispatch_send_duration_seconds", "Provider request time.", ["provider"],
            registry=registry, buckets=LATENCY_BUCKETS,
        )
        self.results = Counter(
            "apiplus_dispatch_results_total", "Results written, by state.", ["state"], registry=registry,
        )
        self.rejects = Counter(
            "apiplus_dispatch_rejects_total", "Commands refused, by error code.", ["code"], registry=registry,
        )
        self.retries = Counter(
            "apiplus_dispatch_retries_total", "Transient send failures retried, by where.", ["where"],
            registry=registry,
        )
        self.duplicates = Counter(
            "apiplus_dispatch_duplicates_total", "Redelivered commands already finished, not sent again.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "apiplus_dispatch_dead_letters_total", "Records sent to the dead-letter topic, by error code.",
            ["code"], registry=registry,
        )
        self.held = Gauge("apiplus_dispatch_held_messages", "Commands held for channels that are not open.",
                          registry=registry)
        self.queued = Gauge("apiplus_dispatch_queued_messages", "Commands waiting in per-channel queues.",
                            registry=registry)
        self.paced = Gauge("apiplus_dispatch_paced_channels", "Channels waiting for their pacing gap.",
                           registry=registry)
        self.in_flight = Gauge("apiplus_dispatch_in_flight_sends", "Provider requests in progress.",
                               registry=registry)
        self.redis_errors = Counter(
            "apiplus_dispatch_redis_errors_total", "Redis operations that failed and were retried.",
            registry=registry,
        )
        self.table_rows = Gauge("apiplus_dispatch_table_rows", "Rows in the registry and health tables.",
                                ["table"], registry=registry)
        # The closed loop (docs/loop.md).
        self.receipts = Counter(
            "apiplus_dispatch_receipts_total", "dispatch.delivery events written, by status.", ["status"],
            registry=registry,
        )
        self.unknown_sends = Counter(
            "apiplus_dispatch_unknown_sends_total",
            "Sends whose outcome was unknown, by how they ended: resolved_by_echo or left_unknown.", ["outcome"],
            registry=registry,
        )
        self.echoes = Counter(
            "apiplus_dispatch_echoes_total", "Gateway echoes of API sends stored for matching unknown sends.",
            registry=registry,
        )
        self.lag = Gauge(
            "kafka_consumergroup_lag",
            "Records between the consumer group's committed offset and the end of each partition.",
            ["consumergroup", "topic", "partition"], registry=registry,
        )
        # The receipts stage runs in the transactional processor: its families, sharing the lag gauge.
        self.receipt_stage = WorkerMetrics(registry, "dispatch_receipt_stage", lag=self.lag)
