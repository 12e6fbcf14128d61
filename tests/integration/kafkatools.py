"""Helpers for integration tests against the real broker: unique topics, produce, read back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from apiplus.kafka import KafkaClientConfig, KafkaClients

ROOT = Path(__file__).resolve().parents[2]


def bootstrap() -> str:
    value = os.environ.get("APIPLUS_KAFKA_BOOTSTRAP")
    if not value:
        raise RuntimeError("APIPLUS_KAFKA_BOOTSTRAP is not set: run the tests with `make test`")
    return value


def redis_url() -> str:
    value = os.environ.get("APIPLUS_REDIS_URL")
    if not value:
        raise RuntimeError("APIPLUS_REDIS_URL is not set: run the tests with `make test`")
    return value


def unique(prefix: str) -> str:
    return f"{prefix}.t{uuid.uuid4().hex[:10]}"


async def create_topics(names: Iterable[str], partitions: int = 3, compacted: Sequence[str] = ()) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    n,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"} if n in compacted else {},
                )
                for n in names
            ]
        )
    finally:
        await admin.close()


async def produce(topic: str, records: Iterable[tuple[bytes | None, Any]]) -> None:
    """Each record is (key, value); dict values are JSON-encoded, bytes sent as they are."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            raw = value if isinstance(value, bytes | None) else orjson.dumps(value)
            await producer.send(topic, key=key, value=raw)
        await producer.flush()
    finally:
        await producer.stop()


async def _partitions(topic: str) -> list[TopicPartition]:
    clients = KafkaClients(KafkaClientConfig(bootstrap()))
    partitions = await clients.partitions_for(topic)
    for _ in range(20):
        if partitions:
            break
        await asyncio.sleep(0.1)
        partitions = await clients.partitions_for(topic)
    return [TopicPartition(topic, p) for p in partitions]


def _reader(committed: bool = True) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if committed else "read_uncommitted",
    )


def _decode(records: Iterable[Any]) -> list[Any]:
    return [orjson.loads(r.value) if r.value is not None else None for r in records]


async def read_all(
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 30.0,
    quiet: float = 1.5,
    committed: bool = True,
) -> list[Any]:
    """Read a topic from the beginning until `expect` records arrived (then `quiet` more seconds)."""
    records = await _read(await _partitions(topic), expect, committed=committed, timeout=timeout, quiet=quiet)
    return _decode(records)


async def read_records(topic: str, partitions: int, expect: int | None, *, committed: bool = True,
                       timeout: float = 30.0, quiet: float = 1.5) -> list[Any]:
    """Raw records (topic, partition, offset, key, value, headers) of partitions 0..`partitions`-1 from the
    beginning: wait for `expect`, then `quiet` seconds for any extra (no `expect`: read for `timeout`)."""
    return await _read([TopicPartition(topic, p) for p in range(partitions)], expect, committed=committed,
                       timeout=timeout, quiet=quiet)


async def _read(partitions: list[TopicPartition], expect: int | None, *, committed: bool, timeout: float,
                quiet: float) -> list[Any]:
    consumer = _reader(committed)
    await consumer.start()
    out: list[Any] = []
    try:
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
            if expect is not None and len(out) >= expect:
                quiet_until = quiet_until or time.monotonic() + quiet
                if time.monotonic() >= quiet_until:
                    break
    finally:
        await consumer.stop()
    return out


async def _undecided(partitions: list[TopicPartition], committed_ends: dict[TopicPartition, int]) -> list[int]:
    """Partitions whose log end is past their committed end: a transaction is open there."""
    log = _reader(committed=False)
    await log.start()
    try:
        log_ends = await log.end_offsets(partitions)
    finally:
        await log.stop()
    return [tp.partition for tp in partitions if log_ends[tp] > committed_ends[tp]]


async def scan(topic: str, *, settled: bool = False, timeout: float = 60.0) -> list[Any]:
    """Every committed record (aiokafka ConsumerRecord) of `topic`, from the beginning to its end now.

    No quiet window: it stops at each partition's end as the broker reports it. With `settled`, it first
    waits until no transaction is open on the topic (every partition's committed end is its log end), so
    that every record written to it so far is decided, and read if committed."""
    consumer = _reader()
    await consumer.start()
    out: list[Any] = []
    try:
        partitions = await _partitions(topic)
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        ends = await consumer.end_offsets(partitions)
        while settled and (open_ := await _undecided(partitions, ends)):
            assert time.monotonic() < deadline, f"{topic}: a transaction stayed open on partitions {open_}"
            await asyncio.sleep(0.2)
            ends = await consumer.end_offsets(partitions)
        behind = [tp for tp in partitions if ends[tp] > 0]
        while behind:
            assert time.monotonic() < deadline, f"{topic}: partitions {behind} not read to their end {ends}"
            for records in (await consumer.getmany(*behind, timeout_ms=200)).values():
                out.extend(r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)])
            behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return out


async def read_to_end(topic: str, *, settled: bool = False, timeout: float = 60.0) -> list[Any]:
    """The committed values of `topic` from the beginning to its end now (see `scan`), JSON-decoded."""
    return _decode(await scan(topic, settled=settled, timeout=timeout))


async def lag(group: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`, the committed records that consumer group `group` has not committed past.

    A worker that commits its consumed offsets in the transaction of its outputs has written (and
    committed) every output of the records it committed past; a lag of zero everywhere means that
    whatever it will ever make of the topic's records so far is already out."""
    ends: dict[int, int] = {}
    for record in await scan(topic, settled=True):
        ends[record.partition] = record.offset + 1
    if not ends:
        return {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[TopicPartition(topic, p) for p in ends])
    finally:
        await admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    return {p: end - committed.get(p, 0) for p, end in ends.items() if end > committed.get(p, 0)}


async def caught_up(group: str, *topics: str, timeout: float = 60.0) -> None:
    """Wait until consumer group `group` has committed past every record in `topics` (see `lag`), all
    of them at once: a record it writes to one of them (a retry) is waited for too."""
    deadline = time.monotonic() + timeout
    while behind := {topic: lags for topic in topics if (lags := await lag(group, topic))}:
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} still behind (topic: partition: records): {behind}")
        await asyncio.sleep(0.25)


async def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


def start_worker(service: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Run `apiplus <service> run` as a real process (so tests can kill -9 it)."""
    full_env = {**os.environ, **env}
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", service, "run"],
        env=full_env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
