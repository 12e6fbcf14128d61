"""The Kafka client settings speak SASL/SCRAM for real: against the local broker's SCRAM listener."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from apiplus.kafka import KafkaClientConfig
from tests.integration.kafkatools import create_topics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
from infra import SCRAM_PASSWORD, SCRAM_USER


def _sasl(password: str) -> KafkaClientConfig:
    bootstrap = os.environ.get("APIPLUS_TEST_SASL_BOOTSTRAP")
    assert bootstrap, "run with `make test` (the broker's SCRAM listener)"
    return KafkaClientConfig(bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                             sasl_username=SCRAM_USER, sasl_password=password)


async def test_scram_client_produces_and_consumes() -> None:
    topic = f"apiplus.test.sasl.{uuid.uuid4().hex[:8]}"
    await create_topics([topic], partitions=1)
    config = _sasl(SCRAM_PASSWORD)
    producer = AIOKafkaProducer(**config.options())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over-scram")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**config.options(), auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    assert [r.value for rs in batch.values() for r in rs] == [b"over-scram"]
    assert SCRAM_PASSWORD not in repr(config)


async def test_scram_client_with_a_wrong_password_is_refused() -> None:
    producer = AIOKafkaProducer(**_sasl("wrong-password").options(), request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()
