"""ingest's health stage as built for production, on the in-memory harness: decoded state, changelog, restart."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from apiplus.harness import Harness
from apiplus.processor import TransactionalProcessor
from services.ingest.health import ChannelHealth
from services.ingest.settings import IngestSettings
from services.ingest.worker import HEALTH_KEY, build

EVENTS, HEALTH, STATE = "events", "health", "state"


class MemoryRedis:
    """The health stage's Redis copy (one MSET per batch); the normalise stage is not run here."""

    def __init__(self, down: bool = False) -> None:
        self.store: dict[str, bytes] = {}
        self.msets = 0
        self.down = down

    def register_script(self, _text: str) -> None:
        return None

    async def mset(self, mapping: dict[str, bytes]) -> None:
        if self.down:
            raise ConnectionError("redis is down")
        self.msets += 1
        self.store.update(mapping)


def _harness() -> Harness:
    h = Harness()
    for topic in (EVENTS, HEALTH, STATE, "raw", "raw.dlq", EVENTS + ".dlq"):
        h.broker.create_topic(topic, partitions=2)
    return h


def _health(h: Harness, redis: MemoryRedis, registry: CollectorRegistry | None = None) -> TransactionalProcessor:
    settings = IngestSettings(kafka_bootstrap="unused:9092", redis_url="redis://unused", raw_topic="raw",
                              events_topic=EVENTS, health_topic=HEALTH, state_topic=STATE,
                              subscribe_evolution=False, tick_seconds=3600)
    _normalise, health = build(settings, registry or CollectorRegistry(), redis, clients=h.kafka, clock=h.clock)  # type: ignore[arg-type]
    return health


def _event(channel: str, kind: str, minute: int, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": f"{channel}-{kind}-{minute}", "type": kind, "channel_id": channel,
                         "source": "evolution", "occurred_at": f"2026-11-27T09:{minute:02d}:00Z", **fields})


def _conn(channel: str, state: str, minute: int) -> bytes:
    return _event(channel, "connection.update", minute, connection={"state": state, "code": None, "reason": None})


async def _run_once(p: TransactionalProcessor) -> None:
    await p.start()
    await p.step()
    await p.close()


async def test_changelog_holds_each_changed_channel_once_per_batch_in_its_dict_form_and_a_restart_resumes() -> None:
    h, redis = _harness(), MemoryRedis()
    for value in (_conn("a", "open", 0), _event("a", "message.received", 1), _event("a", "message.received", 2),
                  _event("b", "message.received", 3)):
        h.broker.produce(EVENTS, value, key=orjson.loads(value)["channel_id"].encode())
    await _run_once(_health(h, redis))

    changelog = {r.key: r.value for r in h.broker.records(STATE)}
    assert len(h.broker.records(STATE)) == 2  # a: three events in one batch, one record
    a = orjson.loads(changelog[b"a"])
    assert a == ChannelHealth.decode(changelog[b"a"]).to_dict()
    assert (a["state"], a["last_event_at"], a["version"]) == ("open", "2026-11-27T09:02:00Z", 1)
    assert [orjson.loads(r.value)["state"] for r in h.broker.records(HEALTH)] == ["open", "unknown"]
    assert orjson.loads(redis.store[HEALTH_KEY + "a"])["state"] == "open"
    assert redis.msets == len({r.partition for r in h.broker.records(EVENTS)})  # one per partition's batch

    # A new owner decodes the changelog: the next change of `a` is its second health event.
    h.broker.produce(EVENTS, _conn("a", "closed", 4), key=b"a")
    await _run_once(_health(h, redis))
    last = orjson.loads(h.broker.records(HEALTH)[-1].value)
    assert (last["channel_id"], last["state"], last["disconnects_last_hour"]) == ("a", "closed", {"closed": 1})
    assert orjson.loads({r.key: r.value for r in h.broker.records(STATE)}[b"a"])["version"] == 2


async def test_with_redis_down_health_is_still_published_and_the_failed_copy_is_counted() -> None:
    h, redis, registry = _harness(), MemoryRedis(down=True), CollectorRegistry()
    h.broker.produce(EVENTS, _conn("a", "open", 0), key=b"a")
    await _run_once(_health(h, redis, registry))
    assert [orjson.loads(r.value)["state"] for r in h.broker.records(HEALTH)] == ["open"]
    assert redis.store == {}
    assert registry.get_sample_value("apiplus_ingest_redis_errors_total") == 1
