"""Every aiokafka client the workers build, made in one place from one `KafkaClientConfig`."""

from __future__ import annotations

import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from apiplus.kafka.config import KafkaClientConfig
from apiplus.kafka.types import Consumer, Producer, TransactionalProducer

log = logging.getLogger("apiplus.kafka")
# The largest record batch a transactional producer builds for one partition (aiokafka's `max_batch_size`,
# 16 KiB by default). The workers produce a poll's outputs together (`send_outputs`: one batch per
# partition), and aiokafka queues one batch per partition at a time: with 16 KiB batches a billing poll
# of 5 000 records became ~100 batches, each waiting for the broker to acknowledge the one before it
# on its partition (a produce request, a round trip and a yield each). 256 KiB keeps a batch and the
# largest record sent alone (SINGLE_SEND_BYTES) below the 1 MiB request size and the broker's default
# `message.max.bytes`; a batch's buffer grows with what is in it, so a small poll costs no more memory.
TRANSACTION_BATCH_BYTES = 256 * 1024
DEFAULT_PARTITION_FETCH_BYTES = 1024 * 1024  # aiokafka's default: what a fetch brings per partition at most


class KafkaClients:
    """The `ClientFactory` of the workers: aiokafka clients with the project's settings."""

    def __init__(self, config: KafkaClientConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"KafkaClients({self.config!r})"

    def group_consumer(self, group_id: str, *, max_poll_records: int = 500,
                       max_partition_fetch_bytes: int = DEFAULT_PARTITION_FETCH_BYTES) -> Consumer:
        consumer: Consumer = AIOKafkaConsumer(
            **self.config.options(),
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=max_poll_records,
            metadata_max_age_ms=30000,
        )
        return consumer

    def reader(self) -> Consumer:
        consumer: Consumer = AIOKafkaConsumer(
            **self.config.options(), group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        return consumer

    def producer(self, *, linger_ms: int = 5) -> Producer:
        producer: Producer = AIOKafkaProducer(
            **self.config.options(), enable_idempotence=True, acks="all", linger_ms=linger_ms
        )
        return producer

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        producer: TransactionalProducer = AIOKafkaProducer(
            **self.config.options(),
            transactional_id=transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=TRANSACTION_BATCH_BYTES,
        )
        return producer

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.config.options())

    async def partitions_for(self, topic: str) -> list[int]:
        admin = self.admin()
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        except KafkaError as exc:
            log.warning("topic metadata unavailable", extra={"topic": topic, "error": type(exc).__name__})
            return []
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()
        for entry in described:
            if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
                return sorted(p["partition"] for p in entry.get("partitions", ()))
        return []
