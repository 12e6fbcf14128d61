"""Dead-letter records: where the record came from, why it was refused, and its bytes without secrets.

`dead_letter` builds the record; `DeadLetterWriter` is the one place that names the DLQ topic (via
`apiplus.topics`), logs, counts and produces it — into the caller's open transaction when the
producer has one, since a dead letter is one of the batch's outputs.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from apiplus.clock import SYSTEM_CLOCK, Clock
from apiplus.envelope import deterministic_id, make_event, rfc3339_from_epoch
from apiplus.errors import PermanentError
from apiplus.kafka.types import Output, Producer
from apiplus.redact import strip_secrets, strip_secrets_bytes
from apiplus.topics import dead_letter_topic

MAX_PAYLOAD_BYTES = 256 * 1024
log = logging.getLogger("apiplus.dlq")


def scrub_payload(raw: bytes | None) -> dict[str, Any]:
    """The raw payload as text (or base64 when not UTF-8), known secrets removed."""
    if raw is None:
        return {"payload": None}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    else:
        raw = orjson.dumps(strip_secrets(parsed))
    cleaned = strip_secrets_bytes(raw) if parsed is None else raw
    truncated = len(cleaned) > MAX_PAYLOAD_BYTES
    cleaned = cleaned[:MAX_PAYLOAD_BYTES]
    try:
        return {"payload": cleaned.decode("utf-8"), "payload_truncated": truncated}
    except UnicodeDecodeError:
        return {"payload_base64": base64.b64encode(cleaned).decode(), "payload_truncated": truncated}


def dead_letter(
    *,
    producer: str,
    topic: str,
    partition: int,
    offset: int,
    raw: bytes | None,
    error: PermanentError,
    now: float | None = None,
) -> dict[str, Any]:
    return make_event(
        "dead_letter",
        event_id=deterministic_id("dlq", topic, partition, offset),
        occurred_at=rfc3339_from_epoch(time.time() if now is None else now),
        producer=producer,
        source={"topic": topic, "partition": partition, "offset": offset},
        error=error.as_dict(),
        **scrub_payload(raw),
    )


class Source(Protocol):
    """Where a refused record came from; a consumed record is one."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class SourceRecord:
    """A `Source` for work that no longer holds its consumed record (e.g. a queued command)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class DeadLetterWriter:
    """Builds, logs, counts and produces dead letters for one producing app.

    `route` maps a source topic to its DLQ (default `apiplus.topics.dead_letter_topic`);
    `on_written(code)` counts one (a metric); the DLQ record is keyed like its source.
    """

    def __init__(
        self,
        app: str,
        *,
        route: Callable[[str], str] = dead_letter_topic,
        on_written: Callable[[str], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.app = app
        self.route = route
        self.on_written = on_written
        self.clock = clock

    def output(self, source: Source, error: PermanentError) -> Output:
        """The dead letter as an `Output`: for a processor to send inside its batch transaction."""
        if self.on_written is not None:
            self.on_written(str(error.code))
        log.info(
            "record dead-lettered",
            extra={"topic": source.topic, "partition": source.partition, "offset": source.offset,
                   "code": str(error.code), "field": error.field},
        )
        value = dead_letter(producer=self.app, topic=source.topic, partition=source.partition,
                            offset=source.offset, raw=source.value, error=error, now=self.clock.time())
        return Output(self.route(source.topic), orjson.dumps(value), key=source.key)

    async def write(self, producer: Producer, source: Source, error: PermanentError) -> None:
        """Produce the dead letter and wait for the broker's acknowledgement. With a transactional
        producer inside `transaction()`, it commits or aborts with the rest of the transaction."""
        out = self.output(source, error)
        await (await producer.send(out.topic, value=out.value, key=out.key))
