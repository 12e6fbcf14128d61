"""The one compacted-topic reader: from the beginning, latest value per key, tombstones delete.

Used whole by the processor's changelog restore (`load_table`) and followed by `apiplus.table.TopicTable`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition

from apiplus.kafka.types import ClientFactory, Consumer


class CompactedReader:
    """Reads partitions of one topic from their beginning through a groupless read_committed consumer."""

    def __init__(self, consumer: Consumer, topic: str, partitions: Sequence[int]) -> None:
        self.consumer = consumer
        self.partitions = [TopicPartition(topic, p) for p in partitions]
        self._ends: dict[Any, int] = {}

    async def start(self) -> None:
        """Start the consumer at the beginning and note where "caught up" is."""
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        self._ends = await self.consumer.end_offsets(self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def fetch(self, timeout_ms: int = 200, max_records: int = 5000) -> list[Any]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [record for records in batch.values() for record in records]

    async def caught_up(self) -> bool:
        """Every partition read up to the end it had when the reader started."""
        for tp, end in self._ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True


def apply_row(table: dict[str, Any], key: str, value: Any | None) -> None:
    """Latest value per key; None (a tombstone) deletes."""
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


async def load_table(
    clients: ClientFactory, topic: str, partition: int, decode: Callable[[bytes], Any] = orjson.loads
) -> dict[str, Any]:
    """The latest committed value of every key in one partition of a compacted topic."""
    reader = CompactedReader(clients.reader(), topic, [partition])
    await reader.start()
    table: dict[str, Any] = {}
    try:
        while not await reader.caught_up():
            for record in await reader.fetch(timeout_ms=500):
                apply_row(table, record.key.decode(), None if record.value is None else decode(record.value))
    finally:
        await reader.stop()
    return table
