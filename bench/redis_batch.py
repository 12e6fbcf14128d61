"""CPU per round trip of dispatch's Redis batcher (`apiplus.redisio.RedisBatcher`: written straight to a pooled
connection, each reply read in order) against the same batcher on redis-py's `Pipeline`, as it was until issue
14's fourth round (docs/benchmarks.md), on a real Redis:

    APIPLUS_PROFILE=bench bash deploy/with-infra.sh .venv/bin/python -m bench.redis_batch

In a steady stream every loop iteration carries only a few commands, so what a round trip costs besides its
commands matters. Prints, per batch size, the lowest CPU per batch and per command of several interleaved
passes of each (`time.process_time`: the client's CPU, not Redis's).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from apiplus import redisio
from apiplus.redisio import RedisBatcher

SIZES = (1, 3, 10, 100)
PASSES = 5


class PipelineBatcher(RedisBatcher):
    """The batcher as it was: each round trip through redis-py's non-transactional `Pipeline`."""

    async def _flush(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for args, _ in batch:
                pipe.execute_command(*args)
            replies = await pipe.execute(raise_on_error=False)
        for (_, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


async def round_trip(batcher: RedisBatcher, commands: list[tuple[Any, ...]]) -> None:
    await asyncio.gather(*(batcher.submit(*args) for args in commands))


async def main() -> None:
    client = redisio.connect(os.environ.get("APIPLUS_REDIS_URL", "redis://127.0.0.1:24379/0"))
    batchers = {"pipeline": PipelineBatcher(client), "batcher": RedisBatcher(client)}
    prefix = f"apiplus:bench:redis-batch:{uuid.uuid4().hex}:"
    try:
        for size in SIZES:
            commands = [("SET", f"{prefix}{i}", b"x" * 300, "EX", 60) for i in range(size)]
            rounds = max(200, 3000 // size)
            best: dict[str, float] = {}
            for _ in range(PASSES):
                for name, batcher in batchers.items():
                    await round_trip(batcher, commands)
                    started = time.process_time()
                    for _ in range(rounds):
                        await round_trip(batcher, commands)
                    best[name] = min(best.get(name, float("inf")), (time.process_time() - started) / rounds)
            print(f"{size:>4} commands: on Pipeline {1e6 * best['pipeline']:7.1f} us/batch "
                  f"({1e6 * best['pipeline'] / size:5.1f}/command), batcher {1e6 * best['batcher']:7.1f} us/batch "
                  f"({1e6 * best['batcher'] / size:5.1f}/command): {best['batcher'] / best['pipeline']:.2f}x")
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
