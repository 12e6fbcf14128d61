"""The send record store's pipelines (services/dispatch/store.py) with a Redis stand-in whose round trips carrying
a SET wait until the test lets them go: a claim is never held behind the DONE records a commit writes."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis

from services.dispatch.record import done, sending
from services.dispatch.store import RedisRecordStore


class GatedRedis:
    """Just enough of redis.asyncio for the batcher: pooled connections whose round trips with a SET in them wait
    for `gate`; an EVAL (the claim) answers nil at once, as Redis does when the claim is written."""

    def __init__(self) -> None:
        self.connection_pool = self
        self.gate = asyncio.Event()

    async def get_connection(self) -> GatedConnection:
        return GatedConnection(self)

    async def release(self, connection: GatedConnection) -> None:
        return None


class GatedConnection:
    socket_timeout = 5.0

    def __init__(self, redis: GatedRedis) -> None:
        self.redis = redis
        self.pending: list[list[bytes]] = []

    async def send_packed_command(self, packed: bytes) -> None:
        reader = hiredis.Reader()
        reader.feed(packed)
        self.pending = list(iter(reader.gets, False))
        if any(command[0] == b"SET" for command in self.pending):
            await self.redis.gate.wait()

    async def read_response(self, timeout: float | None = None) -> Any:
        command = self.pending.pop(0)
        return b"OK" if command[0] == b"SET" else None

    async def disconnect(self) -> None:
        self.pending = []


async def test_a_claim_does_not_wait_behind_the_dones_a_commit_writes() -> None:
    redis = GatedRedis()
    store = RedisRecordStore(redis, 60)  # type: ignore[arg-type]
    dones = [store.put_soon(f"c{i}", done("sent", f"M{i}")) for i in range(300)]
    await asyncio.sleep(0.01)  # their pipeline is in flight, waiting for the gate
    assert await asyncio.wait_for(store.claim("next", sending(1.0)), 1) is None  # claimed at once
    assert not any(d.done() for d in dones)
    redis.gate.set()
    await asyncio.wait_for(asyncio.gather(*dones), 1)
