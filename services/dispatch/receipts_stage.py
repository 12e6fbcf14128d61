"""dispatch's receipts stage: canonical statuses and echoes in, `dispatch.delivery` out, exactly once.

Runs in the transactional processor (group `apiplus-dispatch-receipts`) on ingest's canonical events:
a batch's deliveries and its consumed offsets commit in one transaction. Per batch, two Redis round
trips: the sent-map records of every status (MGET), then the markers of the commands found; then one
pipeline writes the new markers and stores the echoes of API sends (for unknown sends, docs/loop.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from apiplus.correlation import SentRecord, decode_or_none, receipt_key, sent_key
from apiplus.errors import ErrorCode, PermanentError, TransientError
from apiplus.kafka import ClientFactory
from apiplus.processor import Output, PartitionState, ProcessorConfig, TransactionalProcessor
from services.dispatch.loop import echo_of
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.receipts import STATUSES, StatusInput, process, receipt_status
from services.dispatch.settings import DispatchSettings

log = logging.getLogger("apiplus.dispatch.receipts")


@dataclass(frozen=True)
class ReceiptSettings:
    results_topic: str
    sent_ttl_seconds: int
    echo_window_seconds: int


def _position(record: Any) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


class ReceiptsHandler:
    def __init__(self, settings: ReceiptSettings, redis: aioredis.Redis, metrics: DispatchMetrics) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self._prepared: dict[str, list[tuple[Output, str]] | PermanentError] = {}

    async def prepare(self, records: Sequence[Any]) -> None:
        self._prepared = {}
        statuses: list[tuple[str, dict[str, Any], str]] = []  # (position, event, receipt status)
        echoes: list[tuple[str, bytes]] = []
        for record in records:
            position = _position(record)
            self._prepared[position] = []
            try:
                event = orjson.loads(record.value) if record.value is not None else None
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("channel_id"), str):
                self._prepared[position] = PermanentError(ErrorCode.INVALID_VALUE,
                                                          "not a canonical event with a channel_id", "channel_id")
                continue
            if event.get("type") == "message.status":
                block: dict[str, Any] = event["status"] if isinstance(event.get("status"), dict) else {}
                wanted = receipt_status(block.get("state"))
                ours = block.get("from_me") is not False  # False: a receipt our device sent for their message
                if wanted is not None and isinstance(block.get("message_id"), str) and ours:
                    statuses.append((position, event, wanted))
            else:
                stored = echo_of(event)
                if stored is not None:
                    echoes.append((stored[0], stored[1].encode()))
        if not statuses and not echoes:
            return
        try:
            inputs, markers = await self._lookup(statuses)
            emissions = process(inputs, markers)
            await self._write(emissions, echoes)
        except (RedisError, OSError) as exc:
            raise TransientError(f"redis unavailable for receipts: {type(exc).__name__}") from exc
        for emission in emissions:
            event = emission.event
            outputs = self._prepared[emission.position]
            assert isinstance(outputs, list)
            outputs.append((Output(self.settings.results_topic, orjson.dumps(event), key=event["channel_id"].encode()),
                            event["status"]))

    async def _lookup(self, statuses: list[tuple[str, dict[str, Any], str]]
                      ) -> tuple[list[StatusInput], dict[tuple[str, str], str]]:
        if not statuses:
            return [], {}
        keys = [sent_key(e["channel_id"], e["status"]["message_id"]) for _, e, _ in statuses]
        values = await self.redis.mget(keys)
        inputs = []
        for (position, event, wanted), raw in zip(statuses, values, strict=True):
            sent = decode_or_none(SentRecord.decode, raw)
            if sent is None:
                continue  # a message dispatch did not send (or sent longer ago than the sent-map TTL)
            inputs.append(StatusInput(position, event["status"]["message_id"], wanted, event["occurred_at"], sent,
                                      event["status"].get("error")))
        commands = sorted({i.sent.command_id for i in inputs})
        marker_keys = [(c, s) for c in commands for s in STATUSES]
        if not marker_keys:
            return inputs, {}
        found = await self.redis.mget([receipt_key(c, s) for c, s in marker_keys])
        markers = {k: v.decode() if isinstance(v, bytes) else str(v)
                   for k, v in zip(marker_keys, found, strict=True) if v is not None}
        return inputs, markers

    async def _write(self, emissions: Sequence[Any], echoes: list[tuple[str, bytes]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for emission in emissions:
                pipe.set(receipt_key(*emission.marker), emission.position, ex=self.settings.sent_ttl_seconds)
            for key, value in echoes:
                pipe.rpush(key, value)
                pipe.expire(key, self.settings.echo_window_seconds * 2)
            await pipe.execute()
        self.metrics.echoes.inc(len(echoes))

    async def handle(self, record: Any, state: PartitionState) -> Sequence[Output]:
        position = _position(record)
        if position not in self._prepared:
            await self.prepare([record])
        prepared = self._prepared.pop(position)
        if isinstance(prepared, PermanentError):
            raise prepared
        for _, status in prepared:
            self.metrics.receipts.labels(status=status).inc()
        return [output for output, _ in prepared]

    async def tick(self, state: PartitionState, now: float) -> Sequence[Output]:
        return []


def build(settings: DispatchSettings, clients: ClientFactory, redis: aioredis.Redis,
          metrics: DispatchMetrics) -> TransactionalProcessor:
    """The receipts stage: ingest's canonical events -> `dispatch.delivery` on the results topic, transactionally."""
    handler = ReceiptsHandler(
        ReceiptSettings(settings.results_topic, settings.sent_map_ttl_seconds, int(settings.echo_window_seconds)),
        redis, metrics,
    )
    config = ProcessorConfig(app="apiplus-dispatch-receipts", group_id=settings.receipts_group_id,
                             topics=[settings.events_topic])
    return TransactionalProcessor(config, clients, handler, metrics.receipt_stage)
