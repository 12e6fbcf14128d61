"""ingest's duplicate check on the real Redis: the one-call script answers as one SET NX EX GET per event did."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiplus import redisio
from services.ingest.seen import SEEN_KEY, SeenMarkers, position_marker
from tests.integration.kafkatools import redis_url

WINDOW = 3600


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = redisio.connect(redis_url())
    try:
        yield client
    finally:
        await client.aclose()


async def per_event_check(redis: aioredis.Redis, keys: list[str], positions: list[str]) -> list[int]:
    """The check as it was before the script: one SET NX EX GET per event in a pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for key, position in zip(keys, positions, strict=True):
            pipe.set(key, position, nx=True, ex=WINDOW, get=True)
        replies = await pipe.execute()
    return [i for i, (first, position) in enumerate(zip(replies, positions, strict=True))
            if first is not None and first.decode() != position]


# Batches of (event, record offset) over a few events and offsets, so that repeats within a batch,
# across batches, at the same record (a retried batch) and at another record all occur.
batches = st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=8), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
async def test_the_script_flags_exactly_what_one_set_nx_get_per_event_flagged(
    redis: aioredis.Redis, batches: list[list[tuple[int, int]]]
) -> None:
    run = uuid.uuid4().hex
    seen = SeenMarkers(redis, WINDOW)
    for batch in batches:
        ids = [f"{run}-e{event}" for event, _ in batch]
        positions = [position_marker("raw", 0, offset) for _, offset in batch]
        expected = await per_event_check(redis, [f"{SEEN_KEY}ref-{i}" for i in ids], positions)
        assert await seen.seen_elsewhere(ids, positions) == expected
    stored = await redis.mget([SEEN_KEY + f"{run}-e{e}" for e in range(6)])
    reference = await redis.mget([f"{SEEN_KEY}ref-{run}-e{e}" for e in range(6)])
    assert stored == reference  # the same first positions are kept


async def test_new_markers_expire_after_the_window_and_old_ones_keep_their_expiry(redis: aioredis.Redis) -> None:
    run = uuid.uuid4().hex
    await redis.set(f"{SEEN_KEY}{run}-old", "raw:0:1", ex=100)
    seen = SeenMarkers(redis, WINDOW)
    assert await seen.seen_elsewhere([f"{run}-old", f"{run}-new"], ["raw:0:2", "raw:0:2"]) == [0]
    assert 0 < await redis.ttl(f"{SEEN_KEY}{run}-old") <= 100
    assert WINDOW - 60 < await redis.ttl(f"{SEEN_KEY}{run}-new") <= WINDOW
    assert await redis.get(f"{SEEN_KEY}{run}-old") == b"raw:0:1"


async def test_the_script_is_loaded_again_after_redis_forgets_it(redis: aioredis.Redis) -> None:
    run = uuid.uuid4().hex
    seen = SeenMarkers(redis, WINDOW)
    assert await seen.seen_elsewhere([f"{run}-a"], ["raw:0:1"]) == []
    await redis.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    assert await seen.seen_elsewhere([f"{run}-a", f"{run}-b"], ["raw:0:2", "raw:0:2"]) == [0]
    assert await redis.script_exists(seen._script.sha) == [True]
