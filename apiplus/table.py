"""A compacted topic read whole into memory and followed: the registry and health tables of dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.kafka.clients import KafkaClients
from apiplus.kafka.compacted import CompactedReader, apply_row
from apiplus.kafka.config import KafkaClientConfig
from apiplus.kafka.types import ClientFactory

log = logging.getLogger("apiplus.table")
TOPIC_WAIT_ATTEMPTS = 50
TOPIC_WAIT_SECONDS = 0.2


class TopicTable:
    """Rows keyed by record key; a row that is not a JSON object or that `accept` refuses is skipped,
    logged and counted through `on_rejected` (wire it to a metric)."""

    def __init__(
        self,
        kafka: ClientFactory | KafkaClientConfig,  # KafkaClientConfig kept for dispatch until it moves
        topic: str,
        *,
        accept: Callable[[dict[str, Any]], bool] = lambda _: True,
        on_update: Callable[[str, dict[str, Any] | None], None] | None = None,
        on_rejected: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clients: ClientFactory = KafkaClients(kafka) if isinstance(kafka, KafkaClientConfig) else kafka
        self.topic = topic
        self.accept = accept
        self.on_update = on_update
        self.on_rejected = on_rejected
        self.clock = clock
        self.rows: dict[str, dict[str, Any]] = {}
        self.loaded = asyncio.Event()
        self._stopping = asyncio.Event()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        reader = CompactedReader(self.clients.reader(), self.topic, await self._partitions())
        await reader.start()
        try:
            while not self._stopping.is_set():
                for record in await reader.fetch():
                    self._apply(record)
                if not self.loaded.is_set() and await reader.caught_up():
                    self.loaded.set()
                    log.info("table loaded", extra={"topic": self.topic, "rows": len(self.rows)})
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()

    async def _partitions(self) -> list[int]:
        for _ in range(TOPIC_WAIT_ATTEMPTS):
            partitions = await self.clients.partitions_for(self.topic)
            if partitions:
                return partitions
            await self.clock.sleep(TOPIC_WAIT_SECONDS)
        raise RuntimeError(f"topic {self.topic} does not exist")

    def _apply(self, record: Any) -> None:
        if record.key is None:
            self._rejected(record)
            return
        key = record.key.decode("utf-8", "replace")
        value: dict[str, Any] | None = None
        if record.value is not None:
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict) or not self.accept(value):
                self._rejected(record)
                return
        apply_row(self.rows, key, value)
        if self.on_update is not None:
            self.on_update(key, value)

    def _rejected(self, record: Any) -> None:
        log.warning("table row refused", extra={"topic": self.topic, "offset": record.offset})
        if self.on_rejected is not None:
            self.on_rejected()
