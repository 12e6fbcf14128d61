"""ingest's integration helpers: its topics, and both stages running in-process on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from apiplus import redisio
from services.ingest.settings import IngestSettings
from services.ingest.worker import build
from tests.integration.kafkatools import create_topics, redis_url, unique


async def ingest_topics() -> dict[str, str]:
    """Fresh raw, events, health and state topics (and DLQs), as IngestSettings field names."""
    base = unique("apiplus.ingest")
    topics = {"raw_topic": f"{base}.raw", "events_topic": f"{base}.events", "health_topic": f"{base}.health",
              "state_topic": f"{base}.state"}
    await create_topics([topics["raw_topic"], topics["events_topic"], topics["raw_topic"] + ".dlq",
                         topics["events_topic"] + ".dlq"], partitions=3)
    await create_topics([topics["health_topic"], topics["state_topic"]], partitions=3,
                        compacted=[topics["health_topic"], topics["state_topic"]])
    return topics


@asynccontextmanager
async def running_ingest(settings: IngestSettings) -> AsyncIterator[aioredis.Redis]:
    """Both ingest stages running until the block ends; yields their Redis client."""
    redis = redisio.connect(redis_url())
    normalise, health = build(settings, CollectorRegistry(), redis)
    tasks = [asyncio.create_task(normalise.run()), asyncio.create_task(health.run())]
    try:
        yield redis
    finally:
        normalise.stop()
        health.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await redis.aclose()
