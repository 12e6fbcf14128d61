"""What the loops need from Kafka clients, as protocols: aiokafka's clients satisfy them, and so do
the in-memory fakes of `apiplus.harness`. Partitions are aiokafka's `TopicPartition` throughout."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Output:
    """One record to produce: in a processor's transaction, or by any producer."""

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

    def group_consumer(self, group_id: str, *, max_poll_records: int = 500) -> Consumer:
        """A consumer in `group_id`: manual commits, earliest reset, read_committed."""

    def reader(self) -> Consumer:
        """A consumer without a group (assign + seek), read_committed: compacted tables, changelogs."""

    def producer(self, *, linger_ms: int = 5) -> Producer:
        """An idempotent producer (acks=all) for records outside any transaction."""

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        """A transactional producer; `start()` runs init_transactions, which fences an older instance."""

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition numbers, sorted; empty when the topic does not exist (yet)."""


async def send_outputs(producer: Producer, outputs: Sequence[Output]) -> list[Awaitable[Any]]:
    """Queue each output; the deliveries, to await when the caller needs the acknowledgements."""
    return [
        await producer.send(out.topic, value=out.value, key=out.key, partition=out.partition,
                            headers=list(out.headers) if out.headers else None)
        for out in outputs
    ]
