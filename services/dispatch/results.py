"""What dispatch writes to Kafka: results, dead letters, and commands parked in the retry topic.

Progress results (`queued`, `held`) are not awaited; terminal ones are acknowledged before the send
record says DONE, so a crash in between re-emits the same result (same `event_id`) rather than lose it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from apiplus.clock import Clock
from apiplus.dlq import DeadLetterWriter, Source
from apiplus.envelope import deterministic_id, make_event, rfc3339_from_epoch
from apiplus.errors import PermanentError
from apiplus.kafka import Producer
from services.dispatch.metrics import INTAKE, DispatchMetrics
from services.dispatch.outcome import Failure, ResultState

log = logging.getLogger("apiplus.dispatch")
PRODUCER = "apiplus-dispatch"
RETRY_HEADER = "x-apiplus-retry-round"
NOT_BEFORE_HEADER = "x-apiplus-not-before"


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
    def __init__(self, producer: Callable[[], Producer], *, results_topic: str, retry_topic: str,
                 dead_letters: Mapping[str, DeadLetterWriter], metrics: DispatchMetrics, clock: Clock) -> None:
        self._producer = producer  # started with the worker, after the parts are built
        self.results_topic = results_topic
        self.retry_topic = retry_topic
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.clock = clock

    async def result(self, command_id: str, channel_id: str, state: ResultState, *, message_id: str | None = None,
                     error: Failure | None = None, resolved_by: str | None = None) -> None:
        event = result_event(command_id, channel_id, state, self.clock.time(), message_id=message_id, error=error,
                             resolved_by=resolved_by)
        delivery = await self._producer().send(self.results_topic, key=channel_id.encode(), value=orjson.dumps(event))
        if state.terminal:
            await delivery
        else:
            asyncio.ensure_future(delivery).add_done_callback(_log_failed_delivery)
        self.metrics.results(str(state)).inc()

    async def dead_letter(self, source: Source, error: PermanentError, *, stage: str = INTAKE) -> None:
        await self.dead_letters[stage].write(self._producer(), source, error)

    async def park(self, channel_id: str, raw: bytes, retry_round: int, delay: float) -> None:
        """Into the retry topic, without the token (authorised already; it never travels further)."""
        body = orjson.loads(raw)
        body.pop("token", None)
        headers = [(RETRY_HEADER, str(retry_round).encode()),
                   (NOT_BEFORE_HEADER, str(self.clock.time() + delay).encode())]
        await (await self._producer().send(self.retry_topic, key=channel_id.encode(), value=orjson.dumps(body),
                                        headers=headers))


def _log_failed_delivery(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("progress result not delivered", extra={"error": type(delivery.exception()).__name__})
