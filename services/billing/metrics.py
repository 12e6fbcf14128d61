"""billing's Prometheus metrics (apiplus_billing_*), against an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from apiplus.metrics import Labelled, WorkerMetrics


class BillingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.worker = WorkerMetrics(registry, "billing")
        self.events_in = Labelled(Counter(
            "apiplus_billing_input_events_total", "Lifecycle events applied, by type.", ["type"],
            registry=registry,
        ))
        self.events_out = Labelled(Counter(
            "apiplus_billing_events_total", "Billing events written to the invoice topic, by type.", ["type"],
            registry=registry,
        ))
        self.charged_cents = Counter(
            "apiplus_billing_charged_cents_total", "Centavos charged at activation.", registry=registry
        )
        self.invoiced_cents = Counter(
            "apiplus_billing_invoiced_cents_total", "Centavos invoiced at closing.", registry=registry
        )
        self.duplicates = Counter(
            "apiplus_billing_duplicates_total", "Redelivered inputs that changed nothing.", registry=registry
        )
        self.tenants = Gauge("apiplus_billing_tenants", "Tenants held in this worker's state.", registry=registry)
        self.active_channels = Gauge(
            "apiplus_billing_active_channels", "Active channels across this worker's tenants.", registry=registry
        )
        self.last_close_timestamp = Gauge(
            "apiplus_billing_last_invoice_close_timestamp_seconds",
            "When this worker last closed an invoice (upstream or timer).", registry=registry,
        )
        self.overdue_closings = Gauge(
            "apiplus_billing_overdue_closings",
            "Tenants whose due day (plus grace) has passed with the period still open.", registry=registry,
        )
