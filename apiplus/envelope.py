"""The event envelope every topic shares, deterministic ids and RFC 3339 timestamps. Pure."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

# Namespace for uuid5 ids: the same source ids always give the same event id.
ID_NAMESPACE = uuid.UUID("0b7c3f52-8a4e-5d1e-9f0a-6a7069706c75")
ENVELOPE_FIELDS = ("event_id", "type", "schema_version", "occurred_at", "producer")


_NAMESPACE_SHA1 = hashlib.sha1(ID_NAMESPACE.bytes, usedforsecurity=False)  # copied, then fed each id's text
_VARIANT = "89ab" * 4  # the hex digit of byte 8's high nibble with the RFC 4122 variant bits (10xx) set


def deterministic_id(*parts: object) -> str:
    """A stable id from source ids (a uuid5); `None` parts are kept distinct from empty strings.

    Computed directly from the SHA-1 digest's hex: the same value as uuid.uuid5 (version nibble 5,
    variant bits 10), without building UUID objects or byte arrays on the hot path.
    """
    text = "\x1f".join(["\x00" if p is None else str(p) for p in parts])
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(text.encode())
    h = sha1.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:32]}"


def rfc3339(moment: datetime) -> str:
    """UTC, `Z`-suffixed; milliseconds only when the moment has them."""
    moment = moment.astimezone(UTC)
    if moment.year >= 1000:  # isoformat's text is strftime's then (and costs half): "+00:00" becomes "Z"
        return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")[:-6] + "Z"
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_from_epoch(seconds: float) -> str:
    return rfc3339(datetime.fromtimestamp(seconds, tz=UTC))


def parse_rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return moment.astimezone(UTC)


def make_event(
    type_: str,
    *,
    event_id: str,
    occurred_at: str,
    producer: str,
    schema_version: int = 1,
    **payload: Any,
) -> dict[str, Any]:
    return {  # one dict display: this runs for every event ingest, billing and dispatch publish
        "event_id": event_id,
        "type": type_,
        "schema_version": schema_version,
        "occurred_at": occurred_at,
        "producer": producer,
        **payload,
    }


def json_bytes(value: Any) -> bytes:
    """orjson's JSON bytes at their own size. orjson (3.12 on) returns its bytes in the buffer it wrote them
    into, at least 4 KiB and never shrunk; whatever waits before it is written (a dispatch result in its
    outbox until the commit, a send record in the Redis pipeline until it flushes) would hold 4 KiB for a
    few hundred bytes (docs/bench-notes/s3-dispatch-rss.md). The copy costs well under a microsecond."""
    return bytes(memoryview(orjson.dumps(value)))
