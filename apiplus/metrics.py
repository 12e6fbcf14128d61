"""Metric families every worker shares, built once against an injected registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Labelled:
    """A labelled metric whose children are looked up once: `.labels()` on every event is costly."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class WorkerMetrics:
    """The consume loop's families for one service; each stage gets a bound view."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        prefix = f"apiplus_{service}"
        self.registry = registry
        self.records = Counter(
            f"{prefix}_records_total", "Input records processed, by stage and outcome.",
            ["stage", "outcome"], registry=registry,
        )
        self.dead_letters = Counter(
            f"{prefix}_dead_letters_total", "Records sent to a dead-letter topic, by stage and error code.",
            ["stage", "code"], registry=registry,
        )
        self.retries = Counter(
            f"{prefix}_retries_total", "Transient failures retried in place.", ["stage"], registry=registry,
        )
        self.transaction_aborts = Counter(
            f"{prefix}_transaction_aborts_total", "Batch transactions aborted and retried.", ["stage"],
            registry=registry,
        )
        self.batch_duration = Histogram(
            f"{prefix}_batch_duration_seconds", "Time to process and commit one batch.", ["stage"],
            registry=registry, buckets=LATENCY_BUCKETS,
        )
        self.ready = Gauge(f"{prefix}_ready", "1 when the worker is ready (its /readyz checks pass), else 0.",
                           registry=registry)
        self.table_rejected = Counter(
            f"{prefix}_table_rows_rejected_total", "Rows of a followed compacted table refused as malformed.",
            ["table"], registry=registry,
        )
        self.lag = Gauge(
            "kafka_consumergroup_lag",
            "Records between the consumer group's position and the end of each partition.",
            ["consumergroup", "topic", "partition"], registry=registry,
        )

    def stage(self, stage: str) -> ProcessorMetrics:
        return ProcessorMetrics(self, stage)


class ProcessorMetrics:
    def __init__(self, families: WorkerMetrics, stage: str) -> None:
        self._records = Labelled(families.records)
        self._dead_letters = Labelled(families.dead_letters)
        self.stage = stage
        self.retries = families.retries.labels(stage=stage)
        self.transaction_aborts = families.transaction_aborts.labels(stage=stage)
        self.batch_duration = families.batch_duration.labels(stage=stage)
        self.lag = families.lag
        self.ready = families.ready

    def record(self, outcome: str, count: int = 1) -> None:
        self._records(self.stage, outcome).inc(count)

    def dead_letter(self, code: str) -> None:
        self._dead_letters(self.stage, code).inc()
