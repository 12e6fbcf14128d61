"""What the loops need from Kafka clients, as protocols: aiokafka's clients satisfy them, and so do
the in-memory fakes of `apiplus.harness`. Partitions are aiokafka's `TopicPartition` throughout.

`send_outputs` produces a list of `Output`s: on aiokafka's producer through its public batch API
(`create_batch`, `send_batch`: one call per partition instead of one `send` per record), on any other
`Producer` (the harness's fakes) one `send` per output."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner


class Output(NamedTuple):
    """One record to produce: in a processor's transaction, or by any producer.

    Immutable like the frozen dataclass it was, and built in a third of its time (a tuple: no guarded
    `object.__setattr__` per field); the workers build one or more per input record."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] | None = None


class Record(Protocol):
    """The fields of a consumed record the loops read (aiokafka's `ConsumerRecord` has them)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class Consumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: Sequence[str] = (), pattern: str | None = None, listener: Any = None) -> None: ...

    def assign(self, partitions: Sequence[Any]) -> None: ...

    def assignment(self) -> set[Any]: ...

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]: ...

    async def seek_to_beginning(self, *partitions: Any) -> None: ...

    async def end_offsets(self, partitions: Sequence[Any]) -> dict[Any, int]: ...

    async def position(self, partition: Any) -> int: ...

    async def committed(self, partition: Any) -> int | None:
        """The group's committed offset of the partition, asked of the broker; None when none."""

    def highwater(self, partition: Any) -> int | None: ...

    def last_stable_offset(self, partition: Any) -> int | None: ...

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None: ...

    def pause(self, *partitions: Any) -> None: ...

    def resume(self, *partitions: Any) -> None: ...

    def paused(self) -> set[Any]: ...


class Producer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """Queue a record; the returned awaitable resolves when the broker acknowledged it."""


class TransactionalProducer(Producer, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """Begin; commit on a clean exit, abort when the block raises."""

    async def send_offsets_to_transaction(self, offsets: Mapping[Any, int], group_id: str) -> None: ...


class ClientFactory(Protocol):
    """Where every Kafka client of a worker comes from (`apiplus.kafka.KafkaClients`, or the harness's fake)."""

    def group_consumer(self, group_id: str, *, max_poll_records: int = 500,
                       max_partition_fetch_bytes: int = ...) -> Consumer:
        """A consumer in `group_id`: manual commits, earliest reset, read_committed; fetches of at most
        `max_partition_fetch_bytes` per partition (aiokafka's 1 MiB unless given)."""

    def reader(self) -> Consumer:
        """A consumer without a group (assign + seek), read_committed: compacted tables, changelogs."""

    def producer(self, *, linger_ms: int = 5) -> Producer:
        """An idempotent producer (acks=all) for records outside any transaction."""

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        """A transactional producer; `start()` runs init_transactions, which fences an older instance."""

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition numbers, sorted; empty when the topic does not exist (yet)."""


class Batch(Protocol):
    """What `send_batched` uses of aiokafka's `BatchBuilder` (public: `AIOKafkaProducer.create_batch`)."""

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None,
               headers: Sequence[tuple[str, bytes]]) -> Any:
        """Add a record; None when the batch is full (its first record is always taken)."""

    def close(self) -> None: ...


class BatchProducer(Producer, Protocol):
    """aiokafka's batch API, as `send_batched` uses it."""

    def create_batch(self) -> Batch: ...

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Awaitable[Any]:
        """Queue a closed batch for one partition (inside the open transaction, which covers it)."""

    async def partitions_for(self, topic: str) -> set[int]: ...


# A record bigger than this is sent on its own with `send`, which refuses one above the producer's
# max_request_size (1 MiB by default, the value KafkaClients leaves) with MessageSizeTooLargeError
# before queuing it; a batch accepts any first record, so a batch stays below the producer's batch size
# (aiokafka's 16 KiB by default, `TRANSACTION_BATCH_BYTES` = 256 KiB for transactional producers) + this
# limit, under the request size.
SINGLE_SEND_BYTES = 512 * 1024
_PARTITIONER = DefaultPartitioner()
_KEY_CACHE_LIMIT = 32_768
_KEY_PARTITIONS: dict[tuple[int, ...], dict[bytes, int]] = {}  # per partition list: key -> partition


def key_partition(key: bytes, partitions: tuple[int, ...]) -> int:
    """The partition aiokafka's default partitioner (murmur2, as Java's) gives a key, remembered per
    partition list: `partitions` must be the topic's partitions, sorted."""
    return _key_partition(key, partitions, _known(partitions))


def _known(partitions: tuple[int, ...]) -> dict[bytes, int]:
    known = _KEY_PARTITIONS.get(partitions)
    if known is None:
        known = _KEY_PARTITIONS[partitions] = {}
    return known


def _key_partition(key: bytes, partitions: tuple[int, ...], known: dict[bytes, int]) -> int:
    partition = known.get(key)
    if partition is None:
        if len(known) >= _KEY_CACHE_LIMIT:
            known.clear()
        partition = known[key] = int(_PARTITIONER(key, list(partitions), list(partitions)))
    return partition


async def send_outputs(producer: Producer, outputs: Sequence[Output]) -> list[Awaitable[Any]]:
    """Queue the outputs in their order (per partition, the order Kafka keeps); one delivery per output,
    to await when the caller needs the acknowledgements. Inside a transaction, every record is part of it.
    On aiokafka's producer the records go in batches (`send_batched`); elsewhere one `send` each."""
    if len(outputs) > 1 and isinstance(producer, AIOKafkaProducer):
        batching: BatchProducer = producer
        deliveries = await send_batched(batching, outputs)
    else:
        deliveries = [await _send_one(producer, out) for out in outputs]
    for delivery in {id(d): d for d in deliveries}.values():
        if isinstance(delivery, asyncio.Future):
            delivery.add_done_callback(_seen)
    return deliveries


def _seen(delivery: asyncio.Future[Any]) -> None:
    """A failed delivery fails the transaction's commit (or the caller that awaits it); marked as seen here
    so that asyncio does not also log each one as "never retrieved" (36 000 error lines once, when a
    fenced producer's queued records all failed at once)."""
    if not delivery.cancelled():
        delivery.exception()


async def _send_one(producer: Producer, out: Output) -> Awaitable[Any]:
    return await producer.send(out.topic, value=out.value, key=out.key, partition=out.partition,
                               headers=list(out.headers) if out.headers else None)


async def send_batched(producer: BatchProducer, outputs: Sequence[Output]) -> list[Awaitable[Any]]:
    """`send_outputs` through the batch API: one batch per partition (a full one is queued and a new one
    started), each record on the partition `send` would have chosen: its own, or its key's by the
    default partitioner. Records without key or partition (the partitioner picks a random available
    one) and records over `SINGLE_SEND_BYTES` go through `send`, after every batch started before them,
    so each partition receives the records in the order given. The delivery of a batched record is
    its batch's (it resolves to the batch's metadata)."""
    deliveries: list[Awaitable[Any] | None] = [None] * len(outputs)
    open_batches: dict[tuple[str, int], tuple[Batch, list[int]]] = {}
    keyed: dict[str, tuple[tuple[int, ...], dict[bytes, int]]] = {}  # topic -> its partitions, key cache

    async def queue(where: tuple[str, int]) -> None:
        batch, members = open_batches.pop(where)
        batch.close()
        delivery = await producer.send_batch(batch, where[0], partition=where[1])
        for index in members:
            deliveries[index] = delivery

    for index, out in enumerate(outputs):
        topic, value, key, partition, headers = out
        size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        if headers:
            size += sum(len(h) + len(v) for h, v in headers)
        if (key is None and partition is None) or size > SINGLE_SEND_BYTES:
            for where in list(open_batches):
                await queue(where)
            deliveries[index] = await _send_one(producer, out)
            continue
        if partition is None:
            assert key is not None
            known = keyed.get(topic)
            if known is None:
                listed = tuple(sorted(await producer.partitions_for(topic)))
                known = keyed[topic] = (listed, _known(listed))
            partition = _key_partition(key, known[0], known[1])
        where = (topic, partition)
        listed_headers = list(headers) if headers else []
        entry = open_batches.get(where)
        if entry is not None:
            if entry[0].append(timestamp=None, key=key, value=value, headers=listed_headers) is not None:
                entry[1].append(index)
                continue
            await queue(where)  # full: queue it, this record starts the next one
        batch = producer.create_batch()
        batch.append(timestamp=None, key=key, value=value, headers=listed_headers)
        open_batches[where] = (batch, [index])
    for where in list(open_batches):
        await queue(where)
    queued = [delivery for delivery in deliveries if delivery is not None]
    if len(queued) != len(outputs):
        raise RuntimeError("an output was not queued")  # cannot happen: every branch above queues it
    return queued
