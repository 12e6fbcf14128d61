"""Redis connections (redis.asyncio, the maintained successor of aioredis)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

# Thousands of concurrent channel lanes share a bounded pool: without a bound, redis-py opens one
# connection per concurrent caller, and the connection handshakes dominate.
MAX_CONNECTIONS = 64


def connect(url: str, max_connections: int = MAX_CONNECTIONS) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, socket_timeout=2.0, socket_connect_timeout=2.0,
        health_check_interval=15,
    )
    return aioredis.Redis(connection_pool=pool)


async def ping(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False


class RedisBatcher:
    """Coalesces the commands that many tasks issue into pipelines, at most `max_in_flight` at a time.

    Thousands of dispatch lanes each write small records; one round trip and one packing pass per
    pipeline costs far less CPU than a full request per command. What is submitted while the pipelines in
    flight wait for their replies joins the next one, sent as one of them completes: under load a write
    (a system call) carries many commands, not the one or two a single loop iteration queued. Commands
    reach Redis in the order they were submitted when `max_in_flight` is 1.
    """

    def __init__(self, client: aioredis.Redis, max_batch: int = 1000, max_in_flight: int = 1) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def execute(self, *args: Any) -> Any:
        return await self.submit(*args)

    def submit(self, *args: Any) -> asyncio.Future[Any]:
        """Queue a command for the next pipeline; its reply as a future (gathered without a task each)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._scheduled and len(self._tasks) < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        return future

    def _flush_soon(self) -> None:
        self._scheduled = False
        while self._queue and len(self._tasks) < self.max_in_flight:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._queue:  # what waited for this pipeline goes next
            self._flush_soon()

    async def _flush(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        """One round trip on a pooled connection: every command packed by hiredis and written at once, every reply
        read in order under one timeout (the connection's socket timeout) for the whole batch, not one per reply.
        Replies are Redis's own (b"OK", bulk strings, None), without redis-py's per-command callbacks; an error
        reply fails only its own command. Not redis-py's `Pipeline`: for the few commands of a round trip its
        set-up costs about as much as the commands (docs/benchmarks.md, fourth and fifth rounds)."""
        pool = self.client.connection_pool
        try:
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            _fail(batch, exc)
            return
        replies: list[Any] = []
        try:
            async with asyncio.timeout(connection.socket_timeout):
                await connection.send_packed_command(b"".join([pack_command(args) for args, _ in batch]))
                for _ in batch:
                    try:
                        replies.append(await connection.read_response(timeout=math.inf))  # the batch's timeout
                    except ResponseError as error:  # the reply was read whole: the connection stays in step
                        replies.append(error)
        # Cut off mid-reply (an error, a timeout, a cancellation): the connection may hold replies nobody will
        # read, so it is closed, never handed back as it is.
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            await connection.disconnect()
            _fail(batch, exc)
            return
        except BaseException:
            await connection.disconnect()
            _fail(batch, RedisConnectionError("batch interrupted"))
            raise
        finally:
            await pool.release(connection)
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def _fail(batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
