"""ingest's Prometheus metrics (apiplus_ingest_*), against an injected registry. No channel ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from apiplus.metrics import LATENCY_BUCKETS, Labelled, WorkerMetrics


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.worker = WorkerMetrics(registry, "ingest")
        self.events = Labelled(Counter(
            "apiplus_ingest_events_total", "Canonical events emitted, by source gateway and type.",
            ["source", "type"], registry=registry,
        ))
        self.ignored = Labelled(Counter(
            "apiplus_ingest_ignored_total",
            "Raw events (or items of them) deliberately not published, by source gateway and reason.",
            ["source", "reason"], registry=registry,
        ))
        self.duplicates = Labelled(Counter(
            "apiplus_ingest_duplicates_total", "Gateway events delivered again and not re-emitted.",
            ["source"], registry=registry,
        ))
        self.disconnects = Labelled(Counter(
            "apiplus_ingest_disconnects_total", "Channel disconnects, by reason.", ["reason"], registry=registry,
        ))
        self.qr_codes = Counter(
            "apiplus_ingest_qr_codes_total", "QR codes issued by the gateways.", registry=registry,
        )
        self.health_changes = Counter(
            "apiplus_ingest_health_changes_total", "channel.health events emitted.", registry=registry,
        )
        self.channels_by_state = Gauge(
            "apiplus_ingest_channels", "Channels by connection state.", ["state"], registry=registry,
        )
        self.channels_by_condition = Gauge(
            "apiplus_ingest_channels_with_condition", "Channels by derived condition.", ["condition"],
            registry=registry,
        )
        # The closed loop (docs/loop.md).
        self.replies_correlated = Labelled(Counter(
            "apiplus_ingest_replies_correlated_total",
            "message.received events tied to the command they answer (in_reply_to), by kind.", ["kind"],
            registry=registry,
        ))
        self.typed_answers = Labelled(Counter(
            "apiplus_ingest_typed_answers_total",
            "Texts recognised as typed answers to numbered options, by the kind they became.", ["kind"],
            registry=registry,
        ))
        self.redis_errors = Counter(
            "apiplus_ingest_redis_errors_total", "Failed writes of the health copy to Redis.", registry=registry,
        )


BODY_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 524288, 1048576)


class WebhookMetrics:
    """`apiplus ingest webhook`: labels are the route name (cloudapi, evolution, uazapi, unknown), never a path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Labelled(Counter(
            "apiplus_ingest_webhook_requests_total", "Webhook requests answered, by route and HTTP status code.",
            ["route", "code"], registry=registry,
        ))
        self.body_bytes = Labelled(Histogram(
            "apiplus_ingest_webhook_body_bytes", "Size of accepted webhook bodies.", ["route"],
            registry=registry, buckets=BODY_BUCKETS,
        ))
        self.ack_duration = Labelled(Histogram(
            "apiplus_ingest_webhook_ack_duration_seconds",
            "From an accepted request to the broker acknowledging all its records.", ["route"],
            registry=registry, buckets=LATENCY_BUCKETS,
        ))
        self.signature_failures = Labelled(Counter(
            "apiplus_ingest_webhook_signature_failures_total",
            "Requests refused for a missing or wrong signature (Cloud API) or ingress key (Evolution, uazapi).",
            ["route", "reason"], registry=registry,
        ))
        self.records = Labelled(Counter(
            "apiplus_ingest_webhook_records_total", "Records acknowledged by the broker on the raw topic.",
            ["route"], registry=registry,
        ))
        self.pending = Gauge(
            "apiplus_ingest_webhook_pending_records", "Records handed to the producer and not yet acknowledged.",
            registry=registry,
        )
        self.producer_replacements = Counter(
            "apiplus_ingest_webhook_producer_replacements_total",
            "Kafka producers replaced after a failed delivery (their sequence numbers had a gap).",
            registry=registry,
        )
        self.ready = Gauge(
            "apiplus_ingest_webhook_ready", "1 when the broker answered the last metadata probe.", registry=registry,
        )
