"""dispatch's Redis side of the closed loop: remember sent messages and offers; settle unknown sends by echo.

See docs/loop.md. The records are the shared contract in apiplus.correlation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from apiplus.correlation import Echo, SentRecord, decode_or_none, pick_echo, sent_key
from apiplus.redisio import RedisBatcher
from services.dispatch.core import Channel, Command
from services.dispatch.loop import EchoWaitInterrupted, echo_keys, remember

RedisCall = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass(frozen=True)
class LoopSettings:
    sent_ttl_seconds: int
    offer_window_seconds: int
    echo_window_seconds: float
    echo_poll_seconds: float = 1.0


async def _direct(operation: Callable[[], Awaitable[Any]]) -> Any:
    return await operation()


class LoopStore:
    def __init__(self, redis: aioredis.Redis, settings: LoopSettings, call: RedisCall = _direct,
                 batcher: RedisBatcher | None = None) -> None:
        self.redis = redis
        self.batcher = batcher or RedisBatcher(redis)  # the send records' batcher: one pipeline for both
        self.settings = settings
        self._call = call  # the worker's "wait a Redis outage out" wrapper

    async def remember(self, command: Command, channel: Channel, message_id: str,
                       resolved_by: str | None = None) -> None:
        """The sent map, and the offer of a degraded interactive message; idempotent (plain SETs)."""
        plan = remember(command, channel, message_id, time.time(), sent_ttl=self.settings.sent_ttl_seconds,
                        offer_window=self.settings.offer_window_seconds, resolved_by=resolved_by)
        # Coalesced with the other lanes' writes of this loop iteration: one round trip for many sends.
        await self._call(lambda: asyncio.gather(*(self.batcher.submit("SET", key, value, "EX", ttl)
                                                  for key, value, ttl in plan.writes)))

    async def find_echo(self, command: Command, channel: Channel, attempt_at: float) -> str | None:
        """The id of an echo of this command's content, claimed for it (SET NX of its sent-map key); or None."""
        keys = echo_keys(command, channel)
        if not keys:
            return None

        async def read() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.lrange(key, 0, -1)
                return await pipe.execute()

        lists = await self._call(read)
        echoes = [e for raw_list in lists for e in (decode_or_none(Echo.decode, raw) for raw in raw_list) if e]
        claimed: set[str] = set()
        while True:
            chosen = pick_echo(echoes, attempt_at, self.settings.echo_window_seconds, claimed=claimed)
            if chosen is None:
                return None
            if await self._claim(command, channel, chosen.provider_message_id):
                return chosen.provider_message_id
            claimed.add(chosen.provider_message_id)

    async def _claim(self, command: Command, channel: Channel, message_id: str) -> bool:
        key = sent_key(channel.instance, message_id)
        record = SentRecord(command.command_id, channel.channel_id, command.to, command.kind, time.time(),
                            resolved_by="echo")
        won = await self._call(lambda: self.redis.set(key, record.encode(), nx=True,
                                                      ex=self.settings.sent_ttl_seconds))
        if won:
            return True
        existing = decode_or_none(SentRecord.decode, await self._call(lambda: self.redis.get(key)))
        return existing is not None and existing.command_id == command.command_id  # ours, from before a crash

    async def await_echo(self, command: Command, channel: Channel, attempt_at: float,
                         stopping: Callable[[], bool] = lambda: False) -> str | None:
        """Poll for the echo until the window after the attempt closes; the id, or None (left unknown).

        Raises EchoWaitInterrupted when `stopping()` turns true before the window closes."""
        deadline = attempt_at + self.settings.echo_window_seconds
        while True:
            found = await self.find_echo(command, channel, attempt_at)
            if found is not None:
                return found
            if time.time() >= deadline:
                return None
            if stopping():
                raise EchoWaitInterrupted(command.command_id)
            await asyncio.sleep(min(self.settings.echo_poll_seconds, max(0.0, deadline - time.time())))
