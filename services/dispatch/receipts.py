"""Delivery receipts: gateway statuses of messages dispatch sent -> `dispatch.delivery` events. Pure.

The state machine is monotone: `delivered` < `read` (`played` counts as `read`); a `read` that arrives
without a `delivered` implies it, and both are emitted in that order; after `read` a late `delivered` is
not emitted; `failed` is emitted only while neither has been (a message that was delivered did not
fail). At most one event per (command, status): the shell keeps, per (command, status), a marker holding
the position (`topic:partition:offset`) of the record that first emitted it. A marker pointing at the
record being processed means a retry of an aborted transaction, so it is emitted again; one pointing at a
later record of the same partition can only come from an aborted transaction too (committed offsets are
below the record being processed), so it counts as not set and is overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apiplus.correlation import SentRecord
from apiplus.envelope import deterministic_id, make_event

PRODUCER = "apiplus-dispatch"
STATUSES = ("delivered", "read", "failed")
_AS_STATUS = {"delivered": "delivered", "read": "read", "played": "read", "failed": "failed"}


def receipt_status(gateway_state: Any) -> str | None:
    """The receipt a canonical `message.status` state stands for; None for pending/sent (nothing to report)."""
    return _AS_STATUS.get(gateway_state) if isinstance(gateway_state, str) else None


def _split(position: str) -> tuple[str, int]:
    head, _, offset = position.rpartition(":")
    try:
        return head, int(offset)
    except ValueError:
        return position, -1


def effective(marker: str, position: str) -> bool:
    """A marker counts unless it points at this record's partition at a later offset (an aborted attempt)."""
    marker_tp, marker_offset = _split(marker)
    tp, offset = _split(position)
    return marker_tp != tp or marker_offset <= offset


def plan(status: str, markers: Mapping[str, str], position: str) -> list[str]:
    """The statuses this record emits, in order, given the markers already set for its command."""

    def emitted_elsewhere(name: str) -> bool:
        return name in markers and markers[name] != position and effective(markers[name], position)

    if status == "read":
        wanted = ["delivered", "read"]
    elif status == "delivered":
        wanted = [] if emitted_elsewhere("read") else ["delivered"]
    elif status == "failed":
        wanted = [] if emitted_elsewhere("delivered") or emitted_elsewhere("read") else ["failed"]
    else:
        raise ValueError(f"not a receipt status: {status!r}")
    return [name for name in wanted if not emitted_elsewhere(name)]


def delivery_event(sent: SentRecord, provider_message_id: str, status: str, occurred_at: str,
                   error: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `dispatch.delivery` event; its id depends only on (command, status), so a copy is recognisable."""
    payload: dict[str, Any] = {
        "command_id": sent.command_id,
        "channel_id": sent.channel_id,
        "provider_message_id": provider_message_id,
        "status": status,
    }
    if status == "failed":
        payload["error"] = failure(error)
    return make_event(
        "dispatch.delivery",
        event_id=deterministic_id("dispatch.delivery", sent.command_id, status),
        occurred_at=occurred_at,
        producer=PRODUCER,
        **payload,
    )


def failure(error: Mapping[str, Any] | None) -> dict[str, str]:
    """A gateway's error block ({code, title}) as the event's {code, message}."""
    code = error.get("code") if error else None
    title = error.get("title") if error else None
    return {
        "code": str(code) if code not in (None, "") else "provider_failed",
        "message": str(title) if title else "the gateway reported that the message was not delivered",
    }


@dataclass(frozen=True)
class StatusInput:
    """One canonical `message.status` that belongs to a message dispatch sent."""

    position: str  # topic:partition:offset of the record
    provider_message_id: str
    status: str  # a receipt status (see receipt_status)
    occurred_at: str
    sent: SentRecord
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Emission:
    event: dict[str, Any]
    marker: tuple[str, str]  # (command_id, status) whose marker is set ...
    position: str  # ... to this record's position


def process(inputs: Sequence[StatusInput], markers: Mapping[tuple[str, str], str]) -> list[Emission]:
    """A batch, in record order. `markers`: (command_id, status) -> position, as read before the batch."""
    known: dict[tuple[str, str], str] = dict(markers)
    out: list[Emission] = []
    for item in inputs:
        command_id = item.sent.command_id
        mine = {name: known[(command_id, name)] for name in STATUSES if (command_id, name) in known}
        for name in plan(item.status, mine, item.position):
            known[(command_id, name)] = item.position
            event = delivery_event(item.sent, item.provider_message_id, name, item.occurred_at, item.error)
            out.append(Emission(event, (command_id, name), item.position))
    return out
