"""`send_outputs` on aiokafka's real producer and the real broker: the batch API puts every record where
`send` puts it, inside the open transaction (an abort hides it, a commit shows it), with its headers."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from apiplus.kafka import KafkaClientConfig, KafkaClients, Output, send_outputs
from apiplus.kafka.clients import TRANSACTION_BATCH_BYTES
from tests.integration.kafkatools import create_topics, read_records, unique


class _Abort(Exception):
    pass


def _clients(kafka_bootstrap: str) -> KafkaClients:
    return KafkaClients(KafkaClientConfig(kafka_bootstrap, client_id="apiplus-test-batches"))


def _keys(count: int) -> list[bytes]:
    """Channel-id-like keys and random bytes of every length up to 64 (murmur2 reads 4 bytes at a time,
    then the 0-3 left over), the empty key included."""
    rng = random.Random(14)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(count // 2)]
    keys += [rng.randbytes(n % 65) for n in range(count - len(keys))]
    return keys


@pytest.mark.parametrize("partitions", [6, 7])
async def test_a_batched_record_lands_on_the_partition_send_gives_its_key(kafka_bootstrap: str,
                                                                          partitions: int) -> None:
    via_send, via_batches = unique("apiplus.test.send"), unique("apiplus.test.batches")
    await create_topics([via_send, via_batches], partitions=partitions)
    keys = _keys(3_000)
    producer = _clients(kafka_bootstrap).producer()
    await producer.start()
    try:
        sent = [await producer.send(via_send, value=str(i).encode(), key=key) for i, key in enumerate(keys)]
        await asyncio.gather(*sent)
        outputs = [Output(via_batches, str(i).encode(), key=key) for i, key in enumerate(keys)]
        deliveries = await send_outputs(producer, outputs)
        assert len(deliveries) == len(outputs)
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    by_send = {r.value: r.partition for r in await read_records(via_send, partitions, len(keys))}
    by_batches = {r.value: r.partition for r in await read_records(via_batches, partitions, len(keys))}
    assert len(by_send) == len(by_batches) == len(keys)
    assert by_batches == by_send
    assert len(set(by_batches.values())) == partitions  # the keys spread over every partition


FILL = 3 * TRANSACTION_BATCH_BYTES // 320  # records of ~320 bytes: about three full batches


async def test_batches_are_in_the_transaction_an_abort_hides_them_a_commit_shows_them(kafka_bootstrap: str) -> None:
    events, retry = unique("apiplus.test.events"), unique("apiplus.test.retry")
    await create_topics([events, retry], partitions=6)
    headers = [("x-apiplus-round", b"2"), ("x-apiplus-not-before", b"1764270000000")]

    def outputs(tag: str) -> list[Output]:
        # FILL records of 300 bytes to partition 0 fill several of the transactional producer's 256 KiB
        # batches (TRANSACTION_BATCH_BYTES); keyed records spread over every partition; parked commands
        # carry headers and an explicit partition.
        filler = b"f" * 300
        made = [Output(events, b"%s-fill-%d-" % (tag.encode(), i) + filler, key=b"k", partition=0)
                for i in range(FILL)]
        made += [Output(events, b"%s-key-%d" % (tag.encode(), i), key=b"channel-%d" % i) for i in range(300)]
        made += [Output(retry, b"%s-parked-%d" % (tag.encode(), i), key=b"channel-%d" % i, partition=i % 6,
                        headers=headers) for i in range(60)]
        return made

    aborted, committed = outputs("aborted"), outputs("committed")
    producer = _clients(kafka_bootstrap).transactional_producer(unique("apiplus-test-batches"))
    await producer.start()
    try:
        try:
            async with producer.transaction():
                await send_outputs(producer, aborted)
                raise _Abort
        except _Abort:
            pass  # the block raised: the transaction aborted
        async with producer.transaction():
            await send_outputs(producer, committed)
    finally:
        await producer.stop()

    seen = await read_records(events, 6, FILL + 300) + await read_records(retry, 6, 60)
    assert sorted(r.value for r in seen) == sorted(out.value for out in committed)
    uncommitted = (await read_records(events, 6, 2 * (FILL + 300), committed=False)
                   + await read_records(retry, 6, 120, committed=False))
    # The aborted batches were written, and only the abort hides them from read_committed readers.
    assert sorted(r.value for r in uncommitted) == sorted(out.value for out in aborted + committed)

    by_value = {r.value: r for r in seen}
    for out in committed:
        record = by_value[out.value]
        assert record.key == out.key
        if out.partition is not None:
            assert record.partition == out.partition
        assert list(record.headers) == list(out.headers or [])
    on_zero = [r.value for r in sorted(seen, key=lambda r: r.offset) if r.topic == events and r.partition == 0
               and b"-fill-" in r.value]
    assert on_zero == [out.value for out in committed if b"-fill-" in (out.value or b"")]  # in order


async def test_a_record_over_the_request_size_is_refused_as_send_refuses_it(kafka_bootstrap: str) -> None:
    topic = unique("apiplus.test.big")
    await create_topics([topic], partitions=3)
    producer = _clients(kafka_bootstrap).producer()
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await send_outputs(producer, [Output(topic, b"small", key=b"a"), Output(topic, b"x" * 1_100_000, key=b"b")])
        keyless = await send_outputs(producer, [Output(topic, b"one", key=b"a"), Output(topic, b"keyless")])
        await asyncio.gather(*keyless)
    finally:
        await producer.stop()
    values = sorted(r.value for r in await read_records(topic, 3, 3))
    assert values == [b"keyless", b"one", b"small"]  # what came before the refused record was sent


async def test_a_transaction_goes_in_a_few_large_batches_the_broker_accepts(kafka_bootstrap: str) -> None:
    """Each full batch waits for the partition's previous one to be acknowledged (docs/facts.md), so a
    transaction of 4 MB in aiokafka's default 16 KiB batches was ~250 round trips in a row: the workers'
    transactional producers batch up to TRANSACTION_BATCH_BYTES, and the broker takes batches that size."""
    topic = unique("apiplus.test.large-batches")
    await create_topics([topic], partitions=1)
    outputs = [Output(topic, f"{i:06d}".encode() * 170, partition=0) for i in range(4_000)]  # 1 020 B each
    producer = _clients(kafka_bootstrap).transactional_producer(unique("apiplus-test-batches"))
    batches = 0
    send_batch = producer.send_batch

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal batches
        batches += 1
        return await send_batch(*args, **kwargs)

    producer.send_batch = counted  # type: ignore[method-assign]
    await producer.start()
    try:
        async with producer.transaction():
            await send_outputs(producer, outputs)
    finally:
        await producer.stop()
    assert batches <= 4_080_000 // TRANSACTION_BATCH_BYTES + 1  # 16 (aiokafka's default: 250)
    seen = await read_records(topic, 1, 4_000)
    assert [r.value for r in seen] == [out.value for out in outputs]
