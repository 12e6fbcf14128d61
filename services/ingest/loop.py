"""ingest's side of the closed loop: a batch's replies looked up in one Redis round trip, then correlated.

The sent map and the offers are written by dispatch (apiplus.correlation); this only reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from apiplus.correlation import Offer, SentRecord, decode_or_none
from apiplus.errors import TransientError
from services.ingest.metrics import IngestMetrics
from services.ingest.replies import correlate, lookups


class ReplyCorrelator:
    def __init__(self, redis: aioredis.Redis, metrics: IngestMetrics, offer_window_seconds: float) -> None:
        self.redis = redis
        self.metrics = metrics
        self.offer_window_seconds = offer_window_seconds

    async def apply(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events with `in_reply_to` and typed answers applied; one MGET for the whole batch."""
        needed = [lookups(e) for e in events]
        keys = sorted({k for n in needed for k in (n.sent, n.offer) if k is not None})
        if not keys:
            return list(events)
        try:
            values = dict(zip(keys, await self.redis.mget(keys), strict=True))
        except (RedisError, OSError) as exc:
            raise TransientError(f"redis unavailable for reply correlation: {type(exc).__name__}") from exc
        out = []
        for event, need in zip(events, needed, strict=True):
            sent = decode_or_none(SentRecord.decode, values.get(need.sent)) if need.sent else None
            offer = decode_or_none(Offer.decode, values.get(need.offer)) if need.offer else None
            result = correlate(event, sent, offer, self.offer_window_seconds)
            kind = result.event["message"]["kind"] if result.correlated else None
            if result.correlated:
                self.metrics.replies_correlated(str(kind)).inc()
            if result.typed:
                self.metrics.typed_answers(str(kind)).inc()
            out.append(result.event)
        return out
