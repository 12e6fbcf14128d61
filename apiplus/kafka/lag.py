"""The one consumer-lag exporter: `kafka_consumergroup_lag{consumergroup,topic,partition}`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka.errors import KafkaError

from apiplus.kafka.types import Consumer


class LagExporter:
    """Records between a position and the end of each partition (the last stable offset under
    read_committed, else the high watermark).

    `label` maps a topic to the exported topic label; topics whose label differs from their name
    (ingest's `evolution.*`, one topic per gateway instance) are summed into `partition="all"`.
    Series of partitions no longer held are removed, so a revoked partition stops reporting.
    """

    def __init__(self, gauge: Any, group_id: str, label: Callable[[str], str] = lambda topic: topic) -> None:
        self.gauge = gauge
        self.group_id = group_id
        self.label = label
        self._exported: set[tuple[str, str]] = set()

    async def export(self, consumer: Consumer, partitions: Iterable[Any],
                     positions: Mapping[Any, int | None] | None = None) -> None:
        """Export lag of `partitions`: from `positions` when given (e.g. dispatch's committable
        offsets), otherwise from the consumer's fetch position."""
        totals: dict[tuple[str, str], int] = {}
        for tp in partitions:
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            position = positions.get(tp) if positions is not None else await _position(consumer, tp)
            if end is None or position is None:
                continue
            topic = self.label(tp.topic)
            key = (topic, str(tp.partition) if topic == tp.topic else "all")
            totals[key] = totals.get(key, 0) + max(0, end - position)
        for topic, partition in self._exported - totals.keys():
            self.gauge.remove(self.group_id, topic, partition)
        for (topic, partition), lag in totals.items():
            self.gauge.labels(consumergroup=self.group_id, topic=topic, partition=partition).set(lag)
        self._exported = set(totals)


async def _position(consumer: Consumer, tp: Any) -> int | None:
    try:
        return await consumer.position(tp)
    except KafkaError:
        return None
