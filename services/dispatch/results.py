"""What dispatch writes to Kafka: results, dead letters, and commands parked in the retry topic.

Progress results (`queued`, `held`) are not awaited; terminal ones are acknowledged before the send
record says DONE, so a crash in between re-emits the same result (same `event_id`) rather than lose it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import orjson

from apiplus.dlq import dead_letter
from apiplus.envelope import deterministic_id, make_event, rfc3339_from_epoch
from apiplus.errors import PermanentError
from services.dispatch.clock import Clock
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.outcome import Failure, ResultState

log = logging.getLogger("apiplus.dispatch")
PRODUCER = "apiplus-dispatch"
RETRY_HEADER = "x-apiplus-retry-round"
NOT_BEFORE_HEADER = "x-apiplus-not-before"


class Producer(Protocol):
    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]: ...


def result_event(command_id: str, channel_id: str, state: ResultState, now: float, *,
                 message_id: str | None = None, error: Failure | None = None,
                 resolved_by: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"command_id": command_id, "channel_id": channel_id, "state": str(state)}
    if message_id:
        payload["provider_message_id"] = message_id
    if resolved_by:
        payload["resolved_by"] = resolved_by
    if error is not None:
        payload["error"] = error.as_dict()
    return make_event("dispatch.result", event_id=deterministic_id("dispatch.result", command_id, str(state)),
                      occurred_at=rfc3339_from_epoch(now), producer=PRODUCER, **payload)


class Outputs:
    def __init__(self, producer: Producer, *, results_topic: str, dlq_topic: str, retry_topic: str,
                 metrics: DispatchMetrics, clock: Clock) -> None:
        self.producer = producer
        self.results_topic = results_topic
        self.dlq_topic = dlq_topic
        self.retry_topic = retry_topic
        self.metrics = metrics
        self.clock = clock

    async def result(self, command_id: str, channel_id: str, state: ResultState, *, message_id: str | None = None,
                     error: Failure | None = None, resolved_by: str | None = None) -> None:
        event = result_event(command_id, channel_id, state, self.clock.now(), message_id=message_id, error=error,
                             resolved_by=resolved_by)
        delivery = await self.producer.send(self.results_topic, key=channel_id.encode(), value=orjson.dumps(event))
        if state.terminal:
            await delivery
        else:
            delivery.add_done_callback(_log_failed_delivery)
        self.metrics.results.labels(state=str(state)).inc()

    async def dead_letter(self, topic: str, partition: int, offset: int, raw: bytes | None, key: bytes | None,
                          error: PermanentError) -> None:
        self.metrics.dead_letters.labels(code=str(error.code)).inc()
        value = dead_letter(producer=PRODUCER, topic=topic, partition=partition, offset=offset, raw=raw, error=error,
                            now=self.clock.now())
        await (await self.producer.send(self.dlq_topic, key=key, value=orjson.dumps(value)))

    async def park(self, channel_id: str, raw: bytes, retry_round: int, delay: float) -> None:
        """Into the retry topic, without the token (authorised already; it never travels further)."""
        body = orjson.loads(raw)
        body.pop("token", None)
        headers = [(RETRY_HEADER, str(retry_round).encode()),
                   (NOT_BEFORE_HEADER, str(self.clock.now() + delay).encode())]
        await (await self.producer.send(self.retry_topic, key=channel_id.encode(), value=orjson.dumps(body),
                                        headers=headers))


def _log_failed_delivery(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("progress result not delivered", extra={"error": type(delivery.exception()).__name__})
