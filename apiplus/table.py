"""A compacted topic read whole into memory and followed: the registry and health tables of dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from apiplus.kafka import KafkaClientConfig

log = logging.getLogger("apiplus.table")


class TopicTable:
    def __init__(
        self,
        kafka: KafkaClientConfig,
        topic: str,
        *,
        accept: Callable[[dict[str, Any]], bool] = lambda _: True,
        on_update: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.accept = accept
        self.on_update = on_update
        self.rows: dict[str, dict[str, Any]] = {}
        self.rejected = 0
        self.loaded = asyncio.Event()
        self._stopping = asyncio.Event()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.options(), group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batch.values():
                    for record in records:
                        self._apply(record)
                if not self.loaded.is_set() and all(
                    [await consumer.position(tp) >= end for tp, end in ends.items()]
                ):
                    self.loaded.set()
                    log.info("table loaded", extra={"topic": self.topic, "rows": len(self.rows)})
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(50):
            parts = consumer.partitions_for_topic(self.topic)
            if parts:
                return [TopicPartition(self.topic, p) for p in sorted(parts)]
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        raise RuntimeError(f"topic {self.topic} does not exist")

    def _apply(self, record: Any) -> None:
        if record.key is None:
            self.rejected += 1
            return
        key = record.key.decode("utf-8", "replace")
        if record.value is None:
            self.rows.pop(key, None)
            value = None
        else:
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict) or not self.accept(value):
                self.rejected += 1
                log.warning("table row refused", extra={"topic": self.topic, "offset": record.offset})
                return
            self.rows[key] = value
        if self.on_update is not None:
            self.on_update(key, value)
