"""Metric names follow Prometheus conventions: apiplus_<service>_, _total counters, base units, closed labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.billing.metrics import BillingMetrics
from services.dispatch.metrics import DispatchMetrics
from services.ingest.metrics import IngestMetrics, WebhookMetrics

FORBIDDEN_LABELS = {
    "channel_id", "tenant_id", "channel", "tenant", "phone", "to", "from", "command_id", "instance_name",
    "path", "url", "key",
}


def test_metric_names_and_labels() -> None:
    for service, metrics in (("ingest", IngestMetrics), ("ingest", WebhookMetrics), ("dispatch", DispatchMetrics),
                             ("billing", BillingMetrics)):
        registry = CollectorRegistry()
        metrics(registry)
        for family in registry.collect():
            assert family.name.startswith(f"apiplus_{service}_") or family.name == "kafka_consumergroup_lag"
            if "duration" in family.name or "latency" in family.name:
                assert family.name.endswith("_seconds"), family.name
            if family.type == "histogram" and "bytes" in family.name:
                assert family.name.endswith("_bytes"), family.name
            for sample in family.samples:
                assert not set(sample.labels) & FORBIDDEN_LABELS, (family.name, sample.labels)
