"""The normalise stage's handler with an in-memory Redis: ignores counted, partial records, every type deduplicated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import pytest
from prometheus_client import CollectorRegistry

from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.dlq import dead_letter
from apiplus.errors import ErrorCode, PermanentError, TransientError
from apiplus.harness import ManualClock
from apiplus.processor import Output, PartitionState
from apiplus.redisio import connect
from apiplus.topics import dlq_name
from services.ingest.core import PRODUCER, Context
from services.ingest.metrics import IngestMetrics
from services.ingest.settings import IngestSettings
from services.ingest.worker import NormalizeHandler, normalize_record


class MemoryScript:
    """The duplicate check's script (services/ingest/seen.py) over a dict: per key, in order, SET NX GET."""

    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store
        self.calls = 0

    async def __call__(self, keys: list[str], args: list[Any]) -> list[int]:
        self.calls += 1
        elsewhere = []
        for i, (key, position) in enumerate(zip(keys, args[1:], strict=True), start=1):
            first = self.store.setdefault(key, position.encode())
            if first != position.encode():
                elsewhere.append(i)
        return elsewhere


class MemoryRedis:
    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.script = MemoryScript(self.store)

    def register_script(self, text: str) -> MemoryScript:
        assert "'NX', 'EX', ttl, 'GET'" in text
        return self.script

    async def mget(self, keys: list[str]) -> list[bytes | None]:  # reply correlation: nothing was sent
        return [self.store.get(key) for key in keys]


@dataclass
class Record:
    value: bytes
    offset: int
    topic: str = "apiplus.ingest.raw.v1"
    partition: int = 0
    timestamp: int = 1767225600000
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


SETTINGS = IngestSettings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1")


def handler(clock: Clock = SYSTEM_CLOCK) -> tuple[NormalizeHandler, CollectorRegistry]:
    registry = CollectorRegistry()
    return NormalizeHandler(SETTINGS, MemoryRedis(), IngestMetrics(registry), clock), registry  # type: ignore[arg-type]


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


async def test_the_dead_letter_of_a_partly_bad_record_is_the_record_built_before_the_writer_was_used() -> None:
    """The writer's record equals, byte for byte, what the handler built by hand before (same route,
    producer, source, error and scrubbed payload), and is counted once."""
    clock = ManualClock()
    h, registry = handler(clock)
    raw = orjson.dumps({**STATUS, "apikey": "evo-secret-" + "9" * 16})
    record = Record(raw, offset=7, partition=2, key=b"PN")
    outputs = await h.handle(record, PartitionState(2))
    refusal = normalize_record(raw, Context(received_at_ms=record.timestamp), SETTINGS.max_payload_bytes).refusal()
    assert refusal is not None
    by_hand = dead_letter(producer=PRODUCER, topic=record.topic, partition=record.partition, offset=record.offset,
                          raw=record.value, error=refusal, now=clock.time())
    assert outputs[-1] == Output(dlq_name(SETTINGS.raw_topic), orjson.dumps(by_hand), key=b"PN")
    assert b"evo-secret" not in outputs[-1].value
    assert h.dead_letters.route("evolution.some-instance") == dlq_name(SETTINGS.raw_topic)
    assert registry.get_sample_value("apiplus_ingest_dead_letters_total",
                                     {"stage": "normalize", "code": "invalid_value"}) == 1


async def test_a_batch_is_checked_for_duplicates_in_one_redis_call_and_a_retried_batch_is_published_again() -> None:
    h, registry = handler()
    status = orjson.dumps(statuses(READ))
    upsert = orjson.dumps({"event": "messages.upsert", "instance": "i", "data": {
        "key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False, "id": "E1"},
        "message": {"conversation": "oi"}, "messageTimestamp": 1764234000}})
    records = [Record(status, offset=1), Record(upsert, offset=2), Record(status, offset=3)]
    for attempt in (1, 2):  # the second attempt is the same batch after an aborted transaction
        await h.prepare(records)
        assert cast(MemoryRedis, h.redis).script.calls == attempt
        published = [o for r in records for o in await h.handle(r, PartitionState(0)) if o.topic.endswith("events.v1")]
        assert [orjson.loads(o.value)["type"] for o in published] == ["message.status", "message.received"]
    assert registry.get_sample_value("apiplus_ingest_duplicates_total", {"source": "cloudapi"}) == 2


async def test_redis_down_makes_the_duplicate_check_a_transient_error() -> None:
    redis = connect("redis://127.0.0.1:1")  # nothing listens there
    h = NormalizeHandler(SETTINGS, redis, IngestMetrics(CollectorRegistry()))
    try:
        with pytest.raises(TransientError, match="redis unavailable for deduplication"):
            await h.prepare([Record(orjson.dumps(statuses(READ)), offset=1)])
    finally:
        await redis.aclose()
