"""Exactly-once consume-transform-produce pass-through on each candidate Kafka client (the client decision).

python -m bench.eos_clients aiokafka|confluent-aio|confluent-sync BOOTSTRAP INPUT OUTPUT GROUP

Every variant reads with read_committed, writes the records and the consumed offsets in one
transaction per fetched batch (up to 500 records) and commits nothing outside it.

- aiokafka: as the workers do it (apiplus/processor.py). aiokafka has no KIP-447, so zombie fencing
  needs one transactional producer per input partition (transactional id = group + partition),
  created on assignment, stopped on revocation; one transaction per partition batch.
- confluent-aio: confluent-kafka's asyncio API (`AIOConsumer`, `AIOProducer`; in 2.12 they live in
  `confluent_kafka.experimental.aio`) with KIP-447: ONE transactional producer per process, the
  offsets sent with `consumer.consumer_group_metadata()`, so the broker fences a zombie by the group
  generation; one transaction per fetched batch, whatever partitions it spans.
- confluent-sync: the same KIP-447 loop on the synchronous client, to separate librdkafka's own cost
  from the cost of the asyncio wrapper (a thread-pool hop per call).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

BATCH = 500


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return stop


async def aiokafka_eos(bootstrap: str, source: str, sink: str, group: str) -> None:
    producers: dict[TopicPartition, AIOKafkaProducer] = {}

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
            for tp in revoked:
                if tp in producers:
                    await producers.pop(tp).stop()

        async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            for tp in assigned:
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                            transactional_id=f"{group}-{tp.topic}-{tp.partition}")
                await producer.start()  # init_transactions: fences the partition's previous owner
                producers[tp] = producer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                max_poll_records=BATCH)
    await consumer.start()
    consumer.subscribe([source], listener=Listener())
    stop = stop_event()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            for tp, records in batches.items():
                producer = producers.get(tp)
                if producer is None:  # fetched while the listener still starts the partition's producer
                    consumer.seek(tp, records[0].offset)
                    continue
                async with producer.transaction():
                    for record in records:
                        await producer.send(sink, value=record.value, key=record.key)
                    await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, group)
    finally:
        await consumer.stop()
        for producer in list(producers.values()):
            await producer.stop()


def confluent_configs(bootstrap: str, group: str) -> tuple[dict[str, Any], dict[str, Any]]:
    consumer = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    # KIP-447: the id only has to be unique per live process; fencing is by the group's generation.
    producer = {"bootstrap.servers": bootstrap, "linger.ms": 5, "transactional.id": f"{group}-{os.getpid()}"}
    return consumer, producer


def next_offsets(records: list[Any]) -> list[Any]:
    from confluent_kafka import TopicPartition as Partition

    ends: dict[tuple[str, int], int] = {}
    for record in records:
        if record.error():
            raise RuntimeError(str(record.error()))
        ends[(record.topic(), record.partition())] = record.offset() + 1
    return [Partition(topic, partition, offset) for (topic, partition), offset in ends.items()]


async def confluent_aio_eos(bootstrap: str, source: str, sink: str, group: str) -> None:
    from confluent_kafka.experimental.aio import AIOConsumer, AIOProducer

    consumer_conf, producer_conf = confluent_configs(bootstrap, group)
    consumer = AIOConsumer(consumer_conf)
    producer = AIOProducer(producer_conf, batch_size=BATCH)
    await producer.init_transactions()
    await consumer.subscribe([source])
    stop = stop_event()
    try:
        while not stop.is_set():
            records = await consumer.consume(num_messages=BATCH, timeout=0.2)
            if not records:
                continue
            offsets = next_offsets(records)
            await producer.begin_transaction()
            for record in records:
                await producer.produce(sink, value=record.value(), key=record.key())
            await producer.send_offsets_to_transaction(offsets, await consumer.consumer_group_metadata())
            await producer.commit_transaction()  # flushes the batch first
    finally:
        await producer.close()
        await consumer.close()


def confluent_sync_eos(bootstrap: str, source: str, sink: str, group: str) -> None:
    from confluent_kafka import Consumer, Producer

    consumer_conf, producer_conf = confluent_configs(bootstrap, group)
    consumer, producer = Consumer(consumer_conf), Producer(producer_conf)
    producer.init_transactions()
    consumer.subscribe([source])
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            records = consumer.consume(num_messages=BATCH, timeout=0.2)
            if not records:
                continue
            offsets = next_offsets(records)
            producer.begin_transaction()
            for record in records:
                producer.produce(sink, value=record.value(), key=record.key())
                producer.poll(0)
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            producer.commit_transaction()
    finally:
        consumer.close()


ASYNC: dict[str, Callable[[str, str, str, str], Coroutine[Any, Any, None]]] = {
    "aiokafka": aiokafka_eos, "confluent-aio": confluent_aio_eos}

if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:6]
    if kind == "confluent-sync":
        confluent_sync_eos(*args)
    else:
        uvloop.run(ASYNC[kind](*args))
