"""ingest as built for production, on the in-memory harness: one pass for records in their channel's home
partition, a forward through the raw topic for the others, each event applied to health exactly once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from apiplus.harness import Harness, Killed
from apiplus.kafka.types import key_partition
from apiplus.processor import TransactionalProcessor
from services.ingest.health import ChannelHealth
from services.ingest.settings import IngestSettings
from services.ingest.worker import FORWARD_HEADER, FORWARD_VALUE, HEALTH_KEY, build
from tests.unit.test_ingest_worker_handler import MemoryRedis

RAW, EVENTS, HEALTH, STATE, EVOLUTION = "raw", "events", "health", "state", "evolution.inst"
PARTITIONS = 3


class HealthRedis(MemoryRedis):
    """The normaliser's duplicate check plus the health copies' MSET."""

    async def mset(self, mapping: dict[str, bytes]) -> None:
        self.store.update(mapping)


def home_partition(channel: str, partitions: int) -> int:
    """Where Kafka's default partitioner puts a record keyed by the channel id."""
    return key_partition(channel.encode(), tuple(range(partitions)))


def _harness(state_partitions: int = PARTITIONS) -> Harness:
    h = Harness()
    for topic in (RAW, EVENTS, HEALTH, EVOLUTION):
        h.broker.create_topic(topic, partitions=PARTITIONS)
    h.broker.create_topic(STATE, partitions=state_partitions)
    h.broker.create_topic(RAW + ".dlq", partitions=1)
    return h


def _processors(h: Harness, redis: HealthRedis | None = None, **settings: Any) -> list[TransactionalProcessor]:
    config = IngestSettings(kafka_bootstrap="unused:9092", redis_url="redis://unused", raw_topic=RAW,
                            events_topic=EVENTS, health_topic=HEALTH, state_topic=STATE,
                            subscribe_evolution=settings.pop("subscribe_evolution", False), **settings)
    return build(config, CollectorRegistry(), redis or HealthRedis(), clients=h.kafka,  # type: ignore[arg-type]
                 clock=h.clock)


def _ingest(h: Harness, redis: HealthRedis | None = None) -> TransactionalProcessor:
    (processor,) = _processors(h, redis)
    return processor


def _conn(channel: str, state: str, second: int) -> bytes:
    return orjson.dumps({"event": "connection.update", "instance": channel, "apikey": "evo-secret",
                         "date_time": f"2026-11-27T09:00:{second:02d}Z",
                         "data": {"instance": channel, "state": state,
                                  "statusReason": 428 if state == "close" else 200}})


def _message(channel: str, msg_id: str) -> bytes:
    return orjson.dumps({"event": "messages.upsert", "instance": channel, "apikey": "evo-secret",
                         "data": {"key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False, "id": msg_id},
                                  "message": {"conversation": "oi"}, "messageTimestamp": 1764234000}})


def _keyed(h: Harness, channel: str, value: bytes, topic: str = RAW) -> None:
    """As a producer keyed by channel id with Kafka's default partitioner writes it."""
    h.broker.produce(topic, value, key=channel.encode(), partition=home_partition(channel, PARTITIONS))


def _unkeyed(h: Harness, channel: str, value: bytes) -> None:
    """Anywhere but the channel's home partition (an unkeyed record lands on any partition)."""
    h.broker.produce(RAW, value, partition=(home_partition(channel, PARTITIONS) + 1) % PARTITIONS)


def _values(h: Harness, topic: str, committed: bool = True) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in h.broker.records(topic, committed=committed) if r.value is not None]


def _forwarded(h: Harness, committed: bool = True) -> list[Any]:
    return [r for r in h.broker.records(RAW, committed=committed) if (FORWARD_HEADER, FORWARD_VALUE) in r.headers]


async def _steps(p: TransactionalProcessor, n: int = 3) -> None:
    await p.start()
    for _ in range(n):
        await p.step()
    await p.close()


async def test_a_keyed_record_gives_events_health_and_state_in_one_transaction() -> None:
    h = _harness()
    _keyed(h, "ch-a", _conn("ch-a", "open", 1))
    _keyed(h, "ch-a", _message("ch-a", "M1"))
    await _steps(_ingest(h), 1)  # one poll: nothing comes back through the raw topic
    assert [e["type"] for e in _values(h, EVENTS)] == ["connection.update", "message.received"]
    assert [c["state"] for c in _values(h, HEALTH)] == ["open"]
    home = home_partition("ch-a", PARTITIONS)
    assert [(r.key, r.partition) for r in h.broker.records(STATE)] == [(b"ch-a", home)]
    assert _forwarded(h, committed=False) == []
    assert h.broker.committed("apiplus-ingest", TopicPartition(RAW, home)) == 2
    row = orjson.loads(h.broker.records(STATE)[0].value)
    assert row == ChannelHealth.from_dict(row).to_dict()  # the changelog row is the state's own format


async def test_state_restored_from_the_changelog_carries_on_after_a_restart() -> None:
    h = _harness()
    _keyed(h, "ch-a", _conn("ch-a", "close", 1))
    await _steps(_ingest(h), 1)
    _keyed(h, "ch-a", _conn("ch-a", "close", 2))
    await _steps(_ingest(h), 1)  # a new process: the table comes back from the changelog
    assert [c["state"] for c in _values(h, HEALTH)] == ["closed"]
    rows = [orjson.loads(r.value) for r in h.broker.records(STATE)]
    assert [len(r["disconnects"]) for r in rows] == [1, 2]


async def test_an_aborted_one_pass_transaction_leaves_neither_events_nor_health_and_is_redone_once() -> None:
    h = _harness()
    _keyed(h, "ch-a", _conn("ch-a", "open", 1))
    first = _ingest(h)
    await first.start()
    h.broker.fail_next("commit", Killed())  # kill -9 inside the commit: the transaction stays open
    with pytest.raises(Killed):
        await first.step()
    h.broker.expel(h.kafka.consumers[0])
    assert _values(h, EVENTS, committed=False)
    assert _values(h, HEALTH, committed=False)
    assert _values(h, EVENTS) == []
    assert _values(h, HEALTH) == []
    assert h.broker.records(STATE) == []
    await _steps(_ingest(h), 2)
    assert [e["type"] for e in _values(h, EVENTS)] == ["connection.update"]
    assert [c["state"] for c in _values(h, HEALTH)] == ["open"]
    assert len(h.broker.records(STATE)) == 1


async def test_an_unkeyed_record_forwards_its_events_to_their_home_partition_and_health_follows() -> None:
    h = _harness()
    _unkeyed(h, "ch-b", _conn("ch-b", "open", 1))
    p = _ingest(h)
    await p.start()
    await p.step()  # normalised: the event is published and forwarded, no health yet
    assert [e["type"] for e in _values(h, EVENTS)] == ["connection.update"]
    forwarded = _forwarded(h)
    assert [(r.partition, r.key) for r in forwarded] == [(home_partition("ch-b", PARTITIONS), b"ch-b")]
    assert orjson.loads(forwarded[0].value) == _values(h, EVENTS)[0]
    assert _values(h, HEALTH) == []
    await p.step()  # the forwarded event, read back at the channel's home partition
    await p.step()
    await p.close()
    assert [c["state"] for c in _values(h, HEALTH)] == ["open"]
    assert len(_values(h, EVENTS)) == 1  # nothing published or forwarded twice
    assert len(_forwarded(h)) == 1


async def test_a_mixed_batch_applies_every_event_of_a_channel_once_whichever_path_it_took() -> None:
    h = _harness()
    redis = HealthRedis()
    _keyed(h, "ch-c", _conn("ch-c", "connecting", 1))
    _unkeyed(h, "ch-c", _conn("ch-c", "open", 2))
    _keyed(h, "ch-c", _message("ch-c", "M1"))
    _keyed(h, "ch-c", _conn("ch-c", "close", 4))
    _unkeyed(h, "ch-c", _conn("ch-c", "close", 5))
    _keyed(h, "ch-d", _conn("ch-d", "open", 3))
    _unkeyed(h, "ch-d", _message("ch-d", "M2"))
    await _steps(_ingest(h, redis), 4)
    assert sorted(e["type"] for e in _values(h, EVENTS)) == [
        "connection.update"] * 5 + ["message.received"] * 2
    assert len(_forwarded(h)) == 3
    by_channel: dict[str, list[str]] = {}
    for change in _values(h, HEALTH):
        by_channel.setdefault(change["channel_id"], []).append(change["state"])
    # The home partition's own records first, then the forwards (records on different partitions of
    # the raw topic were never ordered with each other).
    assert by_channel == {"ch-c": ["connecting", "closed", "open", "closed"], "ch-d": ["open"]}
    # Each close counted once, one from each path (a double application would count it twice).
    last = {r.key: orjson.loads(r.value) for r in h.broker.records(STATE)}
    assert len(last[b"ch-c"]["disconnects"]) == 2
    # One writer per channel: its state is only ever written at its home partition.
    assert {(r.key, r.partition) for r in h.broker.records(STATE)} == {
        (b"ch-c", home_partition("ch-c", PARTITIONS)), (b"ch-d", home_partition("ch-d", PARTITIONS))}
    assert orjson.loads(redis.store[HEALTH_KEY + "ch-c"])["state"] == "closed"


async def test_a_crash_after_forwarding_applies_the_forwarded_event_once_after_restart() -> None:
    h = _harness()
    _unkeyed(h, "ch-e", _conn("ch-e", "open", 1))
    first = _ingest(h)
    await first.start()
    await first.step()  # committed: the event and its forward
    _keyed(h, "ch-e", _message("ch-e", "M1"))
    h.broker.fail_next("commit", Killed())  # dies applying the forward (and the new record)
    with pytest.raises(Killed):
        await _until_killed(first)
    h.broker.expel(h.kafka.consumers[0])
    assert _values(h, HEALTH) == []
    await _steps(_ingest(h), 3)
    assert [c["state"] for c in _values(h, HEALTH)] == ["open"]
    assert len(_forwarded(h)) == 1
    assert sorted(e["type"] for e in _values(h, EVENTS)) == ["connection.update", "message.received"]


async def test_evolution_topics_forward_to_the_raw_topic_and_keep_no_state() -> None:
    h = _harness()
    _keyed(h, "ch-f", _conn("ch-f", "open", 1), topic=EVOLUTION)
    raw, evolution = _processors(h, subscribe_evolution=True)
    await _steps(evolution, 1)  # its own group, no changelog: normalised and forwarded
    assert [e["type"] for e in _values(h, EVENTS)] == ["connection.update"]
    assert _values(h, HEALTH) == []
    await _steps(raw, 2)
    assert [(r.topic, r.partition) for r in _forwarded(h)] == [(RAW, home_partition("ch-f", PARTITIONS))]
    assert [c["state"] for c in _values(h, HEALTH)] == ["open"]
    assert [r.partition for r in h.broker.records(STATE)] == [home_partition("ch-f", PARTITIONS)]


async def test_a_forwarded_event_outside_its_home_partition_is_dead_lettered() -> None:
    h = _harness()
    event = {"event_id": "x", "type": "connection.update", "channel_id": "ch-g"}
    h.broker.produce(RAW, orjson.dumps(event), partition=(home_partition("ch-g", PARTITIONS) + 1) % PARTITIONS,
                     headers=[(FORWARD_HEADER, FORWARD_VALUE)])
    await _steps(_ingest(h), 1)
    assert [d["error"]["code"] for d in _values(h, RAW + ".dlq")] == ["invalid_value"]
    assert _values(h, HEALTH) == []
    assert h.broker.records(STATE) == []


async def test_a_changelog_not_co_partitioned_with_the_raw_topic_stops_the_worker() -> None:
    h = _harness(state_partitions=PARTITIONS + 1)
    _keyed(h, "ch-h", _conn("ch-h", "open", 1))
    p = _ingest(h)
    await p.start()
    with pytest.raises(RuntimeError, match="co-partitioned"):
        await p.step()
    assert _values(h, EVENTS, committed=False) == []


async def _until_killed(p: TransactionalProcessor) -> None:
    for _ in range(3):
        await p.step()
