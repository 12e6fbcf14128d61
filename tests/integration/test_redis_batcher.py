"""The Redis batcher on the real Redis: one round trip for what many tasks issue in one loop iteration, each
reply to its own command, an error reply failing only its command, and a connection cut mid-reply never
handed back with replies still in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from apiplus import redisio
from apiplus.redisio import RedisBatcher
from tests.integration.kafkatools import redis_url


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = redisio.connect(redis_url(), max_connections=4)
    try:
        yield client
    finally:
        await client.aclose()


async def test_each_task_gets_the_reply_to_its_own_command_in_one_round_trip(redis: aioredis.Redis) -> None:
    batcher = RedisBatcher(redis)
    prefix = f"apiplus:test:batcher:{uuid.uuid4().hex}:"
    await redis.set(prefix + "present", b"stored")
    replies = await asyncio.gather(
        *(batcher.submit("SET", f"{prefix}{i}", f"value-{i}", "EX", 60) for i in range(50)),
        batcher.submit("GET", prefix + "present"),
        batcher.submit("GET", prefix + "absent"),
        batcher.submit("EVAL", "return redis.call('GET', KEYS[1])", 1, prefix + "7"),
        batcher.submit("INCR", prefix + "present"),  # not an integer: this one fails, the others do not
        batcher.submit("EXISTS", prefix + "0", prefix + "49"),
        return_exceptions=True,
    )
    assert replies[:50] == [b"OK"] * 50
    assert replies[50:53] == [b"stored", None, b"value-7"]
    assert isinstance(replies[53], ResponseError)
    assert replies[54] == 2
    assert await redis.mget([f"{prefix}{i}" for i in range(50)]) == [f"value-{i}".encode() for i in range(50)]


async def test_a_connection_cut_mid_batch_fails_that_batch_and_leaves_no_reply_behind(redis: aioredis.Redis) -> None:
    batcher = RedisBatcher(redis)
    prefix = f"apiplus:test:batcher:{uuid.uuid4().hex}:"
    killer = redisio.connect(redis_url())
    try:
        # The batch's first command blocks on the server; its connection is killed while the replies are awaited.
        batch = asyncio.gather(batcher.submit("BLPOP", prefix + "never", 5),
                               batcher.submit("SET", prefix + "after-blpop", "x"), return_exceptions=True)
        blocked: list[str] = []
        for _ in range(100):
            clients = (await killer.execute_command("CLIENT", "LIST")).decode().splitlines()
            blocked = [c.split("id=")[1].split()[0] for c in clients if " cmd=blpop " in f" {c} "]
            if blocked:
                break
            await asyncio.sleep(0.02)
        assert len(blocked) == 1  # nothing else in the project blocks on a list
        assert await killer.execute_command("CLIENT", "KILL", "ID", blocked[0]) == 1
        first, second = await asyncio.wait_for(batch, 10)
    finally:
        await killer.aclose()
    assert isinstance(first, RedisError | OSError)
    assert isinstance(second, RedisError | OSError)
    # The next batches get their own replies, not the ones left on the old connection.
    for round_ in range(3):
        replies = await asyncio.gather(*(batcher.submit("SET", f"{prefix}{round_}-{i}", f"{round_}-{i}")
                                         for i in range(5)),
                                       batcher.submit("GET", f"{prefix}{round_}-3"))
        assert replies == [b"OK"] * 5 + [f"{round_}-3".encode()]


async def test_a_batch_that_times_out_leaves_no_late_reply_for_the_next_one(redis: aioredis.Redis) -> None:
    """The reply of a command that outlived the socket timeout (2 s) arrives later on that connection: the
    connection is closed at the timeout, so the next batch never reads it as its own."""
    batcher = RedisBatcher(redis)
    prefix = f"apiplus:test:batcher:{uuid.uuid4().hex}:"
    await redis.rpush(prefix + "late", b"late-reply")
    first = await asyncio.gather(batcher.submit("BLPOP", prefix + "empty", 3), return_exceptions=True)
    assert isinstance(first[0], RedisError | OSError)  # timed out after 2 s, the server still blocking
    await asyncio.sleep(1.5)  # the server's nil reply is now sent (to a closed connection, not a pooled one)
    for round_ in range(6):  # every pooled connection is used at least once
        replies = await asyncio.gather(batcher.submit("GET", prefix + "absent"),
                                       batcher.submit("SET", f"{prefix}{round_}", "x"))
        assert replies == [None, b"OK"]


async def test_what_is_submitted_while_a_pipeline_waits_goes_in_the_next_one_in_order(redis: aioredis.Redis) -> None:
    """Commands submitted over many loop iterations while a pipeline is in flight share one round trip, sent
    when it completes, and Redis runs them in the order they were submitted."""
    batcher = RedisBatcher(redis)
    prefix = f"apiplus:test:batcher:{uuid.uuid4().hex}:"
    pool = redis.connection_pool
    taken = 0
    get_connection = pool.get_connection

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal taken
        taken += 1
        return await get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    pool.get_connection = counted  # type: ignore[method-assign]
    try:
        waiting = batcher.submit("BLPOP", prefix + "empty", 0.3)  # in flight for 0.3 s
        await asyncio.sleep(0.05)
        later = []
        for i in range(20):  # twenty loop iterations, each with its own commands
            later += [batcher.submit("RPUSH", prefix + "order", i), batcher.submit("GET", prefix + "absent")]
            await asyncio.sleep(0)
        assert not any(f.done() for f in later)
        assert await waiting is None
        replies = await asyncio.gather(*later)
    finally:
        pool.get_connection = get_connection  # type: ignore[method-assign]
    assert replies[::2] == list(range(1, 21))
    assert taken == 2  # the BLPOP's round trip, then one for all forty commands
    assert await redis.lrange(prefix + "order", 0, -1) == [str(i).encode() for i in range(20)]
