"""ingest's duplicate check: which of a batch's event ids were first seen at another record, in one Redis call.

Each event id has a marker key holding the position (topic:partition:offset) of the record it was
first seen at, kept for the dedupe window. Marking happens before the batch's transaction commits: if
the transaction aborts, the same record comes back, finds its own position in the marker and is
emitted again, so a crash never turns a real message into a "duplicate".

One Lua script per batch does, key by key and in order, what one `SET key position NX EX ttl GET` per
event did in a pipeline (Redis >= 7.0): write the marker when there is none (with the TTL), otherwise
leave it and its TTL alone, and call the event a duplicate when the marker names another position.
The script returns only the duplicates' indexes, so redis-py packs one command and parses one short
reply per batch instead of N of each (docs/bench-notes/s3-ingest.md has the profile). It runs by
EVALSHA; redis-py's script object loads it on the first call and again whenever Redis answers NOSCRIPT
(after a restart or SCRIPT FLUSH).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from apiplus.errors import TransientError

SEEN_KEY = "apiplus:ingest:seen:"

# KEYS[i]: the marker key of the i-th event; ARGV[1]: the TTL in seconds; ARGV[i + 1]: the i-th event's position.
# Returns the 1-based indexes of the events whose marker was already there and names another position.
FIRST_SEEN_ELSEWHERE = """
local ttl = ARGV[1]
local elsewhere = {}
for i, key in ipairs(KEYS) do
  local first = redis.call('SET', key, ARGV[i + 1], 'NX', 'EX', ttl, 'GET')
  if first and first ~= ARGV[i + 1] then
    elsewhere[#elsewhere + 1] = i
  end
end
return elsewhere
"""


def position_marker(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


class SeenMarkers:
    def __init__(self, redis: aioredis.Redis, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self._script = redis.register_script(FIRST_SEEN_ELSEWHERE)

    async def seen_elsewhere(self, event_ids: Sequence[str], positions: Sequence[str]) -> list[int]:
        """Mark each event id as seen at its position (in order); the indexes (0-based) of those first
        seen at another position. Raises TransientError when Redis cannot answer."""
        if not event_ids:
            return []
        keys = [SEEN_KEY + event_id for event_id in event_ids]
        try:
            reply = await self._script(keys=keys, args=[self.window_seconds, *positions])
        except (RedisError, OSError) as exc:
            raise TransientError(f"redis unavailable for deduplication: {type(exc).__name__}") from exc
        return [int(index) - 1 for index in reply]
