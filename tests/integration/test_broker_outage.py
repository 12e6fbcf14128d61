"""A worker survives a broker outage: the ingest worker, run as a process, is ready again and
processes new records once the broker is back, with nothing lost or duplicated.

The broker is stopped while both stages work through a backlog, so transactions are in flight when
the connections drop. In the chaos suite that once killed a producer's sender task (a connection
dropped during a coordinator lookup), after which the stage failed and the worker stalled; whether a
given stop hits that moment is a matter of timing, so the deterministic check of that path is
`tests/unit/test_processor.py` (`SenderDied`). The test starts its own broker five ports above the
session's, so stopping it does not disturb the session's broker and the other tests.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tests.integration.kafkatools import ROOT, bootstrap, redis_url, start_worker, unique

pytestmark = pytest.mark.timeout(240)
BEFORE, AFTER = 6000, 300


def _infra() -> ModuleType:
    spec = importlib.util.spec_from_file_location("apiplus_infra", ROOT / "deploy" / "infra.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_broker(tmp_path: Path) -> Any:
    """A broker of this test alone, five ports above the session's (its SASL port is the port + 2)."""
    infra = _infra()
    port = int(bootstrap().rsplit(":", 1)[1]) + 5
    state = infra.Infra(profile="test", kafka_port=port, controller_port=port + 1, redis_port=0,
                        state_dir=tmp_path / "broker", persist=True)
    infra.kafka_up(state, fresh=True)
    try:
        infra.kafka_wait(state, timeout=90)
        yield infra, state
    finally:
        infra.stop_kafka(state)


async def _create_topics(servers: str, topics: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        compacted = {topics["health_topic"], topics["state_topic"]}
        names = [*topics.values(), topics["raw_topic"] + ".dlq", topics["events_topic"] + ".dlq"]
        await admin.create_topics([NewTopic(n, num_partitions=3, replication_factor=1,
                                            topic_configs={"cleanup.policy": "compact"} if n in compacted else {})
                                   for n in names])
    finally:
        await admin.close()


async def _produce(servers: str, topic: str, start: int, count: int, run: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for i in range(start, start + count):
            channel = f"{run}-{i % 40}"
            body = {"event": "messages.upsert", "instance": channel, "date_time": "2026-11-27T09:00:00Z",
                    "data": {"key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False, "id": f"M{i}"},
                             "message": {"conversation": "oi"}, "messageTimestamp": 1764234000}}
            await producer.send(topic, key=channel.encode(), value=orjson.dumps(body))
        await producer.flush()
    finally:
        await producer.stop()


async def _message_ids(servers: str, topic: str, ends_out: dict[int, int] | None = None) -> list[str]:
    """Every committed canonical event's message id, read from the beginning to the current end;
    `ends_out` gets each partition's offset after its last record (transaction markers not counted)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        ids: list[str] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                ids.extend(orjson.loads(r.value)["message"]["id"] for r in records)
                if ends_out is not None and records:
                    ends_out[tp.partition] = records[-1].offset + 1
        return ids
    finally:
        await consumer.stop()


async def _health_lag(servers: str, group: str, topic: str) -> int:
    """Records of the events topic the health stage has not committed yet."""
    ends: dict[int, int] = {}
    await _message_ids(servers, topic, ends)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        return sum(max(0, ends.get(tp.partition, 0) - (committed[tp].offset if tp in committed else 0))
                   for tp in partitions)
    finally:
        await admin.close()


def _tail(log: Path) -> str:
    return _tail(log)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def _eventually(what: str, check: Any, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (KafkaError, OSError):  # the broker may still be coming back: ask again
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f}s; worker log tail:\n{_tail(log)}")


async def test_ingest_worker_resumes_after_a_broker_outage(own_broker: Any, tmp_path: Path) -> None:
    infra, state = own_broker
    servers = state.bootstrap
    topics = {name: f"{unique('apiplus.ingest')}.{name.split('_')[0]}"
              for name in ("raw_topic", "events_topic", "health_topic", "state_topic")}
    await _create_topics(servers, topics)
    http_port = _free_port()
    health_group = unique("ingest-health")
    env = {
        "APIPLUS_KAFKA_BOOTSTRAP": servers,
        "APIPLUS_REDIS_URL": redis_url(),
        "APIPLUS_INGEST_HTTP_PORT": str(http_port),
        "APIPLUS_INGEST_GROUP_ID": unique("ingest"),
        "APIPLUS_INGEST_HEALTH_GROUP_ID": health_group,
        "APIPLUS_INGEST_SUBSCRIBE_EVOLUTION": "false",
        "APIPLUS_INGEST_TICK_SECONDS": "1",
        **{f"APIPLUS_INGEST_{k.upper()}": v for k, v in topics.items()},
    }
    run = unique("outage")
    log = tmp_path / "ingest.log"
    worker = start_worker("ingest", env, log)
    try:
        await _eventually("ingest ready", lambda: asyncio.to_thread(_ready, http_port), 60, log)
        await _produce(servers, topics["raw_topic"], 0, BEFORE, run)

        async def flowing() -> bool:
            return len(await _message_ids(servers, topics["events_topic"])) >= 500

        await _eventually("events flowing", flowing, 30, log)
        # Stop the broker while both stages are in the middle of the backlog, then bring it back.
        await asyncio.to_thread(infra.stop_kafka, state)
        await asyncio.sleep(2)
        await asyncio.to_thread(infra.kafka_up, state, False)
        await asyncio.to_thread(infra.kafka_wait, state, 90)
        assert worker.poll() is None, f"worker exited during the outage:\n{_tail(log)}"
        await _produce(servers, topics["raw_topic"], BEFORE, AFTER, run)

        async def caught_up() -> bool:
            ids = await _message_ids(servers, topics["events_topic"])
            return (len(set(ids)) == BEFORE + AFTER and await asyncio.to_thread(_ready, http_port)
                    and await _health_lag(servers, health_group, topics["events_topic"]) == 0)

        await _eventually("every record normalised, health caught up and the worker ready again", caught_up, 60, log)
        ids = collections.Counter(await _message_ids(servers, topics["events_topic"]))
        assert len(ids) == BEFORE + AFTER, f"{BEFORE + AFTER - len(ids)} canonical events lost"
        assert set(ids.values()) == {1}, "a canonical event was duplicated"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except Exception:
            worker.kill()
            worker.wait()
            raise AssertionError(f"worker did not stop on SIGTERM:\n{_tail(log)}") from None
    assert worker.returncode == 0, _tail(log)
