"""Dead-letter records: where the record came from, why it was refused, and its bytes without secrets."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from apiplus.envelope import deterministic_id, make_event, rfc3339_from_epoch
from apiplus.errors import PermanentError
from apiplus.redact import strip_secrets, strip_secrets_bytes

MAX_PAYLOAD_BYTES = 256 * 1024


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
