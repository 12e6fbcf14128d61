"""Normalising gateway payloads (Cloud API, Evolution API, uazapiGO) into canonical events. Pure.

Outputs are built field by field from what each gateway documents, never copied wholesale, so a
secret riding in an envelope (Evolution `apikey`, uazapi `token`) cannot reach a canonical event.
Every record ends as events, explicit ignores with a reason, or errors: nothing vanishes silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apiplus.errors import ErrorCode, PermanentError
from services.ingest import cloudapi, evolution, uazapi
from services.ingest.common import (
    DISCONNECT_REASONS,
    IGNORE_REASONS,
    PRODUCER,
    TERMINAL_CODES,
    Context,
    Event,
    Ignored,
    Outcome,
    connection,
    digits_of,
)

__all__ = [
    "DIALECTS", "DISCONNECT_REASONS", "IGNORE_REASONS", "PRODUCER", "TERMINAL_CODES", "Context", "Event", "Ignored",
    "Outcome", "connection", "detect_dialect", "digits_of", "normalize",
]
DIALECTS = ("cloudapi", "evolution", "uazapi")


def detect_dialect(payload: dict[str, Any], forced: str | None = None) -> str:
    if forced is not None:
        if forced not in DIALECTS:
            raise PermanentError(ErrorCode.UNKNOWN_DIALECT, f"unknown dialect {forced!r} in header", field="dialect")
        return forced
    if payload.get("object") == "whatsapp_business_account" or ("entry" in payload and "object" in payload):
        return "cloudapi"
    if "EventType" in payload:
        return "uazapi"
    if "event" in payload and ("instance" in payload or "data" in payload):
        return "evolution"
    raise PermanentError(
        ErrorCode.UNKNOWN_DIALECT,
        "payload matches no gateway: expected a Cloud API webhook (object), an Evolution event "
        "(event, instance) or a uazapi webhook (EventType)",
    )


_NO_CONTEXT = Context()


def normalize(payload: dict[str, Any], ctx: Context = _NO_CONTEXT) -> Outcome:
    """Everything one raw payload yields. Raises PermanentError when the record as a whole is refused;
    a bad item inside an otherwise good record is in `Outcome.errors` next to the other items' events."""
    dialect = detect_dialect(payload, ctx.dialect)
    outcome = _NORMALIZERS[dialect](payload, ctx)
    if len(outcome.events) < 2:  # most records: nothing that could repeat
        return outcome
    # The same item twice in one payload is one event (same id): keep the first.
    seen: set[str] = set()
    unique = []
    for event in outcome.events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    outcome.events = unique
    return outcome


_NORMALIZERS: dict[str, Callable[[dict[str, Any], Context], Outcome]] = {
    "cloudapi": cloudapi.normalize,
    "evolution": evolution.normalize,
    "uazapi": uazapi.normalize,
}
