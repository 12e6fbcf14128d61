"""Where send records live: Redis in the worker, memory in tests; and the guard that checks each step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from apiplus.backoff import Backoff
from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.redisio import RedisBatcher
from services.dispatch.record import CLAIMABLE, SendRecord, SendState, advance, done

log = logging.getLogger("apiplus.dispatch")
KEY_PREFIX = "apiplus:dispatch:cmd:"
FINISHED_MEMORY = 100_000
REDIS_BACKOFF = Backoff(first=0.2, cap=5.0)  # Redis down: wait it out, never guess
CLAIMABLE_STORED = str(SendState.RETRYING)  # the one stored state in record.CLAIMABLE (absent is the other)
assert {None, SendState.RETRYING} == CLAIMABLE
# The first `sending` of a command, as one atomic step: written when the record is absent or says the
# provider did not take an earlier request (record.CLAIMABLE); otherwise the stored record is returned
# unchanged and nothing is written. EVAL (not EVALSHA): nothing to reload after a Redis restart.
CLAIM_SENDING = """
local stored = redis.call('GET', KEYS[1])
if stored and cjson.decode(stored)['state'] ~= ARGV[3] then
  return stored
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class RecordStore(Protocol):
    async def get_many(self, command_ids: Sequence[str]) -> dict[str, SendRecord]: ...

    async def put(self, command_id: str, record: SendRecord) -> None: ...

    def put_soon(self, command_id: str, record: SendRecord) -> Awaitable[None]:
        """`put`, queued now; the awaitable completes when it is written. Many are gathered without a task each."""

    async def put_if_absent(self, command_id: str, record: SendRecord) -> bool: ...

    async def claim(self, command_id: str, record: SendRecord) -> SendRecord | None:
        """Write `record` (a `sending`) if the stored record is absent or CLAIMABLE and return None;
        otherwise return the stored record, unchanged. Atomic."""


class MemoryRecordStore:
    def __init__(self) -> None:
        self.records: dict[str, SendRecord] = {}

    async def get_many(self, command_ids: Sequence[str]) -> dict[str, SendRecord]:
        return {i: self.records[i] for i in command_ids if i in self.records}

    async def put(self, command_id: str, record: SendRecord) -> None:
        self.records[command_id] = record

    def put_soon(self, command_id: str, record: SendRecord) -> Awaitable[None]:
        self.records[command_id] = record
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.set_result(None)
        return written

    async def put_if_absent(self, command_id: str, record: SendRecord) -> bool:
        if command_id in self.records:
            return False
        self.records[command_id] = record
        return True

    async def claim(self, command_id: str, record: SendRecord) -> SendRecord | None:
        stored = self.records.get(command_id)
        if stored is not None and stored.state not in CLAIMABLE:
            return stored
        self.records[command_id] = record
        return None


class RedisRecordStore:
    """`apiplus:dispatch:cmd:<command_id>` with a TTL. Redis holds the exactly-once record: an outage is
    waited out (retrying with backoff) rather than guessed around."""

    def __init__(self, redis: aioredis.Redis, ttl_seconds: int, on_error: Callable[[], None] = lambda: None,
                 backoff: Backoff = REDIS_BACKOFF, clock: Clock = SYSTEM_CLOCK) -> None:
        self.redis = redis
        self.batcher = RedisBatcher(redis)
        # A command's DONE, written after its commit, waits for nothing a send waits on, and comes in bursts (every
        # command a commit finished): its own pipeline, so that a claim never queues behind hundreds of them.
        self.after_commit = RedisBatcher(redis)
        self.ttl = ttl_seconds
        self.on_error = on_error
        self.backoff = backoff
        self.clock = clock

    async def get_many(self, command_ids: Sequence[str]) -> dict[str, SendRecord]:
        if not command_ids:
            return {}
        values = await self._retrying(lambda: self.redis.mget([KEY_PREFIX + i for i in command_ids]))
        return {i: SendRecord.from_json(v) for i, v in zip(command_ids, values, strict=True) if v is not None}

    async def put(self, command_id: str, record: SendRecord) -> None:
        await self._retrying(lambda: self.batcher.submit("SET", KEY_PREFIX + command_id, record.to_json(),
                                                          "EX", self.ttl))

    def put_soon(self, command_id: str, record: SendRecord) -> Awaitable[None]:
        """The SET joins this iteration's pipeline; only if it fails is a task started, to wait the outage out."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()

        def settle(reply: asyncio.Future[Any]) -> None:
            if not reply.cancelled() and reply.exception() is None:
                written.set_result(None)
                return
            retry = loop.create_task(self.put(command_id, record))
            retry.add_done_callback(lambda done: _settle_from(written, done))

        batcher = self.after_commit if record.state is SendState.DONE else self.batcher
        batcher.submit("SET", KEY_PREFIX + command_id, record.to_json(), "EX", self.ttl).add_done_callback(settle)
        return written

    async def put_if_absent(self, command_id: str, record: SendRecord) -> bool:
        return bool(await self._retrying(lambda: self.redis.set(KEY_PREFIX + command_id, record.to_json(), nx=True,
                                                                ex=self.ttl)))

    async def claim(self, command_id: str, record: SendRecord) -> SendRecord | None:
        stored = await self._retrying(lambda: self.batcher.submit(
            "EVAL", CLAIM_SENDING, 1, KEY_PREFIX + command_id, record.to_json(), self.ttl, CLAIMABLE_STORED))
        return SendRecord.from_json(stored) if stored is not None else None

    async def _retrying(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        attempt = 0
        while True:
            try:
                return await operation()
            except (RedisError, OSError) as exc:
                attempt += 1
                self.on_error()
                log.warning("redis unavailable; retrying", extra={"attempt": attempt, "error": type(exc).__name__})
                await self.clock.sleep(self.backoff.delay(attempt))


def _settle_from(target: asyncio.Future[None], source: asyncio.Future[None]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(None)


class SendRecords:
    """Every write goes through the state machine (record.advance) from the last state this process saw.

    Commands finished here are remembered (bounded), so a second copy of a command in the same batch,
    read before the first finished, is still recognised as done.
    """

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._finished: dict[str, None] = {}

    async def read(self, command_ids: Sequence[str]) -> dict[str, SendRecord]:
        return await self.store.get_many(list(dict.fromkeys(i for i in command_ids if i)))

    def current(self, command_id: str, read: SendRecord | None) -> SendRecord | None:
        return done("unknown") if command_id in self._finished else read

    async def step(self, command_id: str, current: SendRecord | None, new: SendRecord) -> SendRecord:
        await self.store.put(command_id, advance(current, new))
        if new.state is SendState.DONE:
            self.remember(command_id)
        return new

    def step_soon(self, command_id: str, current: SendRecord | None, new: SendRecord) -> Awaitable[None]:
        """`step` for writes nothing waits on but a gather (the DONE after a commit): no task per write."""
        written = self.store.put_soon(command_id, advance(current, new))
        if new.state is SendState.DONE:
            self.remember(command_id)
        return written

    async def claim_sending(self, command_id: str, new: SendRecord) -> SendRecord | None:
        """The first `sending` of a command whose record this process has not read (store.claim): None when
        written, else the stored record, which says why not (done, sent, or an attempt of unknown outcome)."""
        stored = await self.store.claim(command_id, advance(None, new))
        if stored is not None and stored.state is SendState.DONE:
            self.remember(command_id)
        return stored

    async def claim_terminal(self, command_id: str, terminal: str) -> bool:
        """For refusals at intake: record the end unless the command has a record already."""
        claimed = await self.store.put_if_absent(command_id, done(terminal))
        if claimed:
            self.remember(command_id)
        return claimed

    def remember(self, command_id: str) -> None:
        """Finished here: later copies in this process are skipped even before the record is written."""
        self._finished[command_id] = None
        if len(self._finished) > FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]
