"""Redis connections (redis.asyncio, the maintained successor of aioredis)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=15)


async def ping(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
