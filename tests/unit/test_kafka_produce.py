"""`send_outputs` through aiokafka's batch API (`send_batched`), against a recording fake of that API.
The real producer and broker are in tests/integration/test_kafka_batches.py."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
from aiokafka.errors import ProducerFenced
from aiokafka.partitioner import DefaultPartitioner

from apiplus.kafka import types as kafka_types
from apiplus.kafka.types import SINGLE_SEND_BYTES, Output, key_partition, send_batched, send_outputs

PARTITIONS = 6


class FakeBatch:
    """Holds `capacity` records, then refuses (returns None) as a full `BatchBuilder` does."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.closed = False

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None,
               headers: Sequence[tuple[str, bytes]]) -> Any:
        assert timestamp is None  # the producer's clock stamps it, as `send` does
        if self.closed or len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, list(headers)))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeBatchProducer:
    """Records every call in order: ("batch", topic, partition, [values]) or ("send", topic, value)."""

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self.calls: list[tuple[Any, ...]] = []
        self.deliveries: list[asyncio.Future[Any]] = []
        self.headers: dict[bytes | None, list[tuple[str, bytes]]] = {}
        self.placed: dict[bytes | None, tuple[str, int]] = {}
        self.keys: dict[bytes | None, bytes | None] = {}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Awaitable[Any]:
        assert batch.closed, "a batch is closed before it is queued (no linger, nothing added by `send`)"
        assert batch.records, "no empty batch is queued"
        self.calls.append(("batch", topic, partition, [value for _, value, _ in batch.records]))
        for key, value, headers in batch.records:
            self.headers[value] = headers
            self.placed[value] = (topic, partition)
            self.keys[value] = key
        return self._delivery()

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> Awaitable[Any]:
        self.calls.append(("send", topic, value))
        return self._delivery()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def _delivery(self) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def values_on(self, topic: str, partition: int) -> list[bytes | None]:
        """What the partition received, in order (batches and single sends placed by the fake)."""
        return [v for call in self.calls if call[0] == "batch" and call[1:3] == (topic, partition) for v in call[3]]


def _key(n: int) -> bytes:
    return f"channel-{n}".encode()


async def test_records_go_one_batch_per_partition_on_their_keys_partition_in_order() -> None:
    producer = FakeBatchProducer(capacity=100)
    outputs = [Output("events", f"v{i}".encode(), key=_key(i % 9)) for i in range(40)]
    deliveries = await send_batched(producer, outputs)
    partitions = tuple(range(PARTITIONS))
    expected: dict[int, list[bytes | None]] = {}
    for out in outputs:
        assert out.key is not None
        expected.setdefault(key_partition(out.key, partitions), []).append(out.value)
    assert sorted(call[2] for call in producer.calls) == sorted(expected)  # one call per partition
    assert all(call[0] == "batch" for call in producer.calls)
    for partition, values in expected.items():
        assert producer.values_on("events", partition) == values
    assert producer.keys == {out.value: out.key for out in outputs}
    assert len(deliveries) == len(outputs)
    # A record's delivery is its batch's: acknowledging the batch acknowledges each of its records.
    for index, out in enumerate(outputs):
        batch_no = next(n for n, call in enumerate(producer.calls) if out.value in call[3])
        assert deliveries[index] is producer.deliveries[batch_no]


async def test_a_full_batch_is_queued_and_the_next_record_starts_a_new_one() -> None:
    producer = FakeBatchProducer(capacity=3)
    outputs = [Output("events", f"v{i}".encode(), partition=2) for i in range(8)]
    deliveries = await send_batched(producer, outputs)
    assert producer.calls == [
        ("batch", "events", 2, [b"v0", b"v1", b"v2"]),
        ("batch", "events", 2, [b"v3", b"v4", b"v5"]),
        ("batch", "events", 2, [b"v6", b"v7"]),
    ]
    batch_of = {id(delivery): n for n, delivery in enumerate(producer.deliveries)}
    assert [batch_of[id(d)] for d in deliveries] == [0, 0, 0, 1, 1, 1, 2, 2]


async def test_explicit_partitions_and_headers_are_kept() -> None:
    producer = FakeBatchProducer()
    headers = [("x-apiplus-round", b"2"), ("x-apiplus-not-before", b"1700000000")]
    outputs = [
        Output("retry", b"parked", key=_key(1), partition=5, headers=headers),
        Output("retry", b"plain", key=_key(1), partition=5),
        Output("progress", b"p", key=b"in:0", partition=0),
    ]
    await send_batched(producer, outputs)
    assert producer.placed == {b"parked": ("retry", 5), b"plain": ("retry", 5), b"p": ("progress", 0)}
    assert producer.headers[b"parked"] == headers
    assert producer.headers[b"plain"] == []


async def test_keyless_and_oversized_records_are_sent_alone_after_the_batches_started_before_them() -> None:
    producer = FakeBatchProducer(capacity=100)
    big = b"x" * (SINGLE_SEND_BYTES + 1)
    outputs = [
        Output("events", b"a", partition=1),
        Output("dlq", b"keyless"),  # the partitioner picks a random available partition: left to `send`
        Output("events", b"b", partition=1),
        Output("events", big, partition=1),  # `send` refuses one over max_request_size, as before
        Output("events", b"c", partition=1),
    ]
    deliveries = await send_batched(producer, outputs)
    assert producer.calls == [
        ("batch", "events", 1, [b"a"]),
        ("send", "dlq", b"keyless"),
        ("batch", "events", 1, [b"b"]),
        ("send", "events", big),
        ("batch", "events", 1, [b"c"]),
    ]
    assert len(deliveries) == len(outputs)


async def test_nothing_to_send_sends_nothing() -> None:
    producer = FakeBatchProducer()
    assert await send_batched(producer, []) == []
    assert producer.calls == []


# Java's producer on the same keys: BuiltInPartitioner.partitionForKey(key, n) of kafka-clients 4.1.1 (the
# jar `make deps` fetches), run in jshell; the keys are UTF-8.
JAVA_PARTITIONS = {
    "": (3, 2, 9), "a": (4, 5, 4), "ab": (2, 0, 2), "abc": (3, 4, 3), "abcd": (2, 5, 8),
    "channel-1": (1, 0, 1), "tenant-42": (2, 6, 2), "5f1c7a2e-3b4d-4c6e-9f1a-2b3c4d5e6f70": (3, 2, 3),
    "apiplus.ingest.raw.v1:3": (3, 5, 3), "ação-ñ": (4, 6, 4),
}


@pytest.mark.parametrize(("key", "expected"), JAVA_PARTITIONS.items())
def test_key_partition_is_javas_for_6_7_and_12_partitions(key: str, expected: tuple[int, int, int]) -> None:
    got = tuple(key_partition(key.encode(), tuple(range(n))) for n in (6, 7, 12))
    assert got == expected


@pytest.mark.parametrize("count", [1, 3, 6, 7, 12, 64])
def test_key_partition_is_the_default_partitioners_for_any_partition_count(count: int) -> None:
    rng = random.Random(count)
    partitions = tuple(range(count))
    partitioner = DefaultPartitioner()
    for _ in range(2_000):
        key = rng.randbytes(rng.randrange(0, 48))
        assert key_partition(key, partitions) == partitioner(key, list(partitions), list(partitions))


def test_the_key_cache_is_bounded_and_stays_right_after_it_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_types, "_KEY_CACHE_LIMIT", 10)
    partitions = (0, 1, 2, 3, 4, 5, 6)
    first = [key_partition(_key(n), partitions) for n in range(25)]
    assert len(kafka_types._KEY_PARTITIONS[partitions]) <= 10
    assert [key_partition(_key(n), partitions) for n in range(25)] == first


class _FailingLater:
    """A producer whose deliveries are plain futures, failed after the records were queued (a fenced
    producer's pending records fail this way)."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_failed_deliveries_nobody_awaits_are_not_reported_as_never_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        producer = _FailingLater()
        awaited = await send_outputs(producer, [Output("t", b"a", key=b"k"), Output("t", b"b", key=b"k")])
        for future in producer.futures:
            future.set_exception(ProducerFenced())
        await asyncio.sleep(0)  # the done callbacks run
        with pytest.raises(ProducerFenced):
            await awaited[0]  # a caller that awaits still gets the failure
        del awaited, producer, future
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
