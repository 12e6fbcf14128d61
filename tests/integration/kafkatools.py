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


async def read_all(
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 30.0,
    quiet: float = 1.5,
    committed: bool = True,
) -> list[Any]:
    """Read a topic from the beginning until `expect` records arrived (then `quiet` more seconds)."""
    clients = KafkaClients(KafkaClientConfig(bootstrap()))
    partitions = await clients.partitions_for(topic)
    for _ in range(20):
        if partitions:
            break
        await asyncio.sleep(0.1)
        partitions = await clients.partitions_for(topic)
    records = await read_records(topic, len(partitions), expect, committed=committed, timeout=timeout, quiet=quiet)
    return [orjson.loads(r.value) if r.value is not None else None for r in records]


async def read_records(topic: str, partitions: int, expect: int | None, *, committed: bool = True,
                       timeout: float = 30.0, quiet: float = 1.5) -> list[Any]:
    """Raw records (topic, partition, offset, key, value, headers) of partitions 0..`partitions`-1 from the
    beginning: wait for `expect`, then `quiet` seconds for any extra (no `expect`: read for `timeout`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                isolation_level="read_committed" if committed else "read_uncommitted")
    await consumer.start()
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        settle: float | None = None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
            if expect is not None and len(out) >= expect:
                settle = settle or time.monotonic() + quiet
                if time.monotonic() >= settle:
                    break
    finally:
        await consumer.stop()
    return out


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
