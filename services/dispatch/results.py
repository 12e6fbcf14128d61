"""What dispatch writes: results, dead letters, and commands parked in the retry topic.

Every output belongs to one consumed command (its partition and offset) and goes into that
partition's outbox (outbox.py), committed with the offset in one transaction: visible exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from apiplus.clock import Clock
from apiplus.dlq import DeadLetterWriter, Source
from apiplus.envelope import deterministic_id, json_bytes, make_event, rfc3339_from_epoch
from apiplus.errors import PermanentError
from apiplus.kafka import Output
from services.dispatch.metrics import INTAKE, DispatchMetrics
from services.dispatch.outbox import After, Outboxes
from services.dispatch.outcome import Failure, ResultState
from services.dispatch.progress import Mark

PRODUCER = "apiplus-dispatch"
RETRY_HEADER = "x-apiplus-retry-round"
NOT_BEFORE_HEADER = "x-apiplus-not-before"
PROGRESS = {ResultState.QUEUED: Mark.QUEUED, ResultState.HELD: Mark.HELD}


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
    def __init__(self, outboxes: Outboxes, *, results_topic: str, retry_topic: str,
                 dead_letters: Mapping[str, DeadLetterWriter], metrics: DispatchMetrics, clock: Clock) -> None:
        self.outboxes = outboxes
        self.results_topic = results_topic
        self.retry_topic = retry_topic
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.clock = clock

    def result(self, command_id: str, channel_id: str, state: ResultState, *, message_id: str | None = None,
               error: Failure | None = None, resolved_by: str | None = None) -> Output:
        self.metrics.results(str(state)).inc()
        event = result_event(command_id, channel_id, state, self.clock.time(), message_id=message_id, error=error,
                             resolved_by=resolved_by)
        return Output(self.results_topic, json_bytes(event), key=channel_id.encode())

    def dead_letter(self, source: Source, error: PermanentError, *, stage: str = INTAKE) -> Output:
        return self.dead_letters[stage].output(source, error)

    def parked(self, channel_id: str, raw: bytes, retry_round: int, delay: float) -> Output:
        """The command for the retry topic, without its token (authorised already; it travels no further)."""
        body = orjson.loads(raw)
        body.pop("token", None)
        headers = [(RETRY_HEADER, str(retry_round).encode()),
                   (NOT_BEFORE_HEADER, str(self.clock.time() + delay).encode())]
        return Output(self.retry_topic, json_bytes(body), key=channel_id.encode(), headers=headers)

    def committed(self, tp: Any, offset: int) -> Mark:
        """How far the command at `offset` got in committed transactions (before a restart, say)."""
        return self.outboxes.mark(tp, offset)

    def progress(self, tp: Any, offset: int, command_id: str, channel_id: str, state: ResultState) -> None:
        """`queued` or `held`: the command goes on."""
        self.outboxes.add(tp, offset, [self.result(command_id, channel_id, state)], PROGRESS[state])

    def finished(self, tp: Any, offset: int, outputs: list[Output], after: After | None = None) -> None:
        """The command's last outputs (terminal result, dead letter, parked copy)."""
        self.outboxes.add(tp, offset, outputs, Mark.FINISHED, after)
