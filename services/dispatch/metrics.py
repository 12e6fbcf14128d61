"""dispatch's Prometheus metrics (apiplus_dispatch_*), against an injected registry. No channel ids.

The families every worker has (records, dead letters, retries, transaction aborts, ready, rejected
table rows, `kafka_consumergroup_lag`) are the shared `WorkerMetrics`; the rest are dispatch's own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from apiplus.metrics import LATENCY_BUCKETS, Labelled, WorkerMetrics

INTAKE = "intake"  # the `stage` label of records read and dead-lettered at intake
DELIVERY = "delivery"  # ... of provider sends retried in place, and of dead letters after the last retry
RECEIPTS = "receipts"  # ... of the receipts stage (canonical statuses and echoes -> dispatch.delivery)
OUTBOX = "outbox"  # ... of the per-partition transactions that commit outputs with offsets


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.worker = WorkerMetrics(registry, "dispatch")
        self.intake = self.worker.stage(INTAKE)
        self.delivery = self.worker.stage(DELIVERY)
        self.outbox = self.worker.stage(OUTBOX)
        self.commands = Labelled(Counter(
            "apiplus_dispatch_commands_total", "Commands read, by source topic kind.", ["source"], registry=registry,
        ))
        self.sends = Labelled(Counter(
            "apiplus_dispatch_sends_total", "Provider send attempts, by provider and outcome.",
            ["provider", "outcome"], registry=registry,
        ))
        self.send_duration = Labelled(Histogram(
            "apiplus_dispatch_send_duration_seconds", "Provider request time.", ["provider"],
            registry=registry, buckets=LATENCY_BUCKETS,
        ))
        self.results = Labelled(Counter(
            "apiplus_dispatch_results_total", "Results written, by state.", ["state"], registry=registry,
        ))
        self.rejects = Labelled(Counter(
            "apiplus_dispatch_rejects_total", "Commands refused, by error code.", ["code"], registry=registry,
        ))
        self.parked = Counter(
            "apiplus_dispatch_parked_total", "Commands parked in the retry topic after their in-place attempts.",
            registry=registry,
        )
        self.duplicates = Counter(
            "apiplus_dispatch_duplicates_total", "Redelivered commands already finished, not sent again.",
            registry=registry,
        )
        self.held = Gauge("apiplus_dispatch_held_messages", "Commands held for channels that are not open.",
                          registry=registry)
        self.queued = Gauge("apiplus_dispatch_queued_messages", "Commands waiting in per-channel queues.",
                            registry=registry)
        self.paced = Gauge("apiplus_dispatch_paced_channels", "Channels waiting for their pacing gap.",
                           registry=registry)
        self.unflushed = Gauge("apiplus_dispatch_unflushed_outputs",
                               "Results, dead letters and parked commands waiting for their partition's transaction.",
                               registry=registry)
        self.in_flight = Gauge("apiplus_dispatch_in_flight_sends", "Provider requests in progress.",
                               registry=registry)
        self.redis_errors = Counter(
            "apiplus_dispatch_redis_errors_total", "Redis operations that failed and were retried.",
            registry=registry,
        )
        self.table_rows = Labelled(Gauge("apiplus_dispatch_table_rows", "Rows in the registry and health tables.",
                                         ["table"], registry=registry))
        # The closed loop (docs/loop.md). The receipts stage's records, retries and aborts are the shared
        # families under stage="receipts".
        self.receipt_stage = self.worker.stage(RECEIPTS)
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
