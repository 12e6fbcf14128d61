"""The normalise stage's handler with an in-memory Redis: ignores counted, partial records, every type deduplicated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from apiplus.errors import ErrorCode, PermanentError
from apiplus.processor import PartitionState
from services.ingest.metrics import IngestMetrics
from services.ingest.settings import IngestSettings
from services.ingest.worker import NormalizeHandler


class MemoryPipeline:
    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store
        self.replies: list[Any] = []

    async def __aenter__(self) -> MemoryPipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def set(self, key: str, value: str, nx: bool, ex: int, get: bool) -> None:
        """Redis's SET NX GET: the value already there (nothing written), or None after writing."""
        assert nx
        assert get
        old = self.store.get(key)
        if old is None:
            self.store[key] = value.encode()
        self.replies.append(old)

    async def execute(self) -> list[Any]:
        return self.replies


class MemoryRedis:
    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    def pipeline(self, transaction: bool) -> MemoryPipeline:
        return MemoryPipeline(self.store)


@dataclass
class Record:
    value: bytes
    offset: int
    topic: str = "apiplus.ingest.raw.v1"
    partition: int = 0
    timestamp: int = 1767225600000
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def handler() -> tuple[NormalizeHandler, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = IngestSettings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1")
    return NormalizeHandler(settings, MemoryRedis(), IngestMetrics(registry)), registry  # type: ignore[arg-type]


READ = {"id": "wamid.1", "status": "read", "timestamp": "1697043223", "recipient_id": "5511"}
EXPLODED = {"id": "wamid.2", "status": "exploded", "timestamp": "1697043223"}


def statuses(*items: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "PN"}, "statuses": list(items)}}]}]}


STATUS = statuses(READ, EXPLODED)


async def test_a_partly_bad_record_publishes_its_good_items_and_dead_letters_the_rest() -> None:
    h, registry = handler()
    outputs = await h.handle(Record(orjson.dumps(STATUS), offset=7), PartitionState(0))
    assert [o.topic for o in outputs] == ["apiplus.ingest.events.v1", "apiplus.ingest.raw.v1.dlq"]
    dead = orjson.loads(outputs[1].value)
    assert dead["error"]["code"] == "invalid_value"
    assert dead["source"] == {"topic": "apiplus.ingest.raw.v1", "partition": 0, "offset": 7}
    assert registry.get_sample_value("apiplus_ingest_dead_letters_total",
                                     {"stage": "normalize", "code": "invalid_value"}) == 1


async def test_a_wholly_bad_record_is_refused_for_the_processor_to_dead_letter() -> None:
    h, _ = handler()
    with pytest.raises(PermanentError) as err:
        await h.handle(Record(b'{"event": "brand.new", "instance": "i", "data": {}}', offset=1), PartitionState(0))
    assert err.value.code == ErrorCode.UNKNOWN_EVENT


async def test_ignores_are_counted_by_source_and_reason() -> None:
    h, registry = handler()
    presence = orjson.dumps({"event": "presence.update", "instance": "i", "data": {}})
    assert await h.handle(Record(presence, offset=1), PartitionState(0)) == []
    assert registry.get_sample_value("apiplus_ingest_ignored_total",
                                     {"source": "evolution", "reason": "presence"}) == 1


async def test_a_status_and_a_connection_delivered_twice_come_out_once() -> None:
    h, registry = handler()
    conn = orjson.dumps({"EventType": "connection", "instanceName": "u", "instance": {"status": "connected"}})
    status = orjson.dumps(statuses(READ))
    records = [Record(status, offset=1), Record(conn, offset=2), Record(status, offset=3, timestamp=1767225700000),
               Record(conn, offset=4, timestamp=1767225700000)]
    await h.prepare(records)
    published = [o for r in records for o in await h.handle(r, PartitionState(0)) if o.topic.endswith("events.v1")]
    assert [orjson.loads(o.value)["type"] for o in published] == ["message.status", "connection.update"]
    assert registry.get_sample_value("apiplus_ingest_duplicates_total", {"source": "cloudapi"}) == 1
    assert registry.get_sample_value("apiplus_ingest_duplicates_total", {"source": "uazapi"}) == 1
