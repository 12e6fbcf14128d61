"""Which offsets may be committed: per partition, the first record not yet finished (apiplus.offsets)."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition

from apiplus.offsets import OffsetTracker


class Commits:
    def __init__(self) -> None:
        self.trackers: dict[TopicPartition, OffsetTracker] = {}

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.trackers.setdefault(tp, OffsetTracker())

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.trackers.pop(tp, None)

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self.trackers

    def add(self, tp: TopicPartition, offset: int) -> None:
        self.trackers[tp].add(offset)

    def done(self, tp: TopicPartition, offset: int) -> None:
        """Finished; a partition revoked meanwhile is ignored (its new owner redoes the record)."""
        tracker = self.trackers.get(tp)
        if tracker is not None:
            tracker.done(offset)

    def position(self, tp: TopicPartition) -> int | None:
        tracker = self.trackers.get(tp)
        return tracker.committable() if tracker else None
