"""The send record: what this service knows of one command's provider call. Pure.

    (absent) --> SENDING --> SENT --> DONE
                  |  ^  \\
                  v  |   `--> DONE  (refused by the provider, or outcome unknown and not resent)
               RETRYING --> DONE    (retries exhausted)
    (absent) --> DONE               (refused at intake, expired, queue full)

`SENDING` is written before every request, with the attempt's time: finding it on redelivery means an
earlier attempt's outcome is unknown (the gateway's echo is awaited from that time, docs/loop.md).
`RETRYING` means the provider answered that it did not take the request (429, 5xx, connection
refused), so sending again is safe. `SENT` holds the provider's message id. `DONE` means
the terminal result is written; a redelivered copy is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from apiplus.envelope import json_bytes


class SendState(StrEnum):
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    DONE = "done"


ALLOWED: dict[SendState | None, frozenset[SendState]] = {
    None: frozenset({SendState.SENDING, SendState.DONE}),
    SendState.SENDING: frozenset({SendState.SENDING, SendState.RETRYING, SendState.SENT, SendState.DONE}),
    SendState.RETRYING: frozenset({SendState.SENDING, SendState.DONE}),
    SendState.SENT: frozenset({SendState.DONE}),
    SendState.DONE: frozenset(),
}


# The stored states a first `sending` may replace without knowing them beforehand (store.claim): none
# (never attempted) or `retrying` (the provider did not take the request). `sending` is allowed after
# `sending` only to the process that wrote it, or where the provider honours idempotency keys.
CLAIMABLE: frozenset[SendState | None] = frozenset({None, SendState.RETRYING})
assert all(SendState.SENDING in ALLOWED[state] for state in CLAIMABLE)


class InvalidTransition(Exception):
    """A programming error: the worker tried a step the state machine does not allow."""


@dataclass(frozen=True)
class SendRecord:
    state: SendState
    message_id: str | None = None
    terminal: str | None = None  # the terminal result state, once DONE
    at: float | None = None  # SENDING: when the attempt started (epoch seconds)

    def to_json(self) -> bytes:
        value: dict[str, Any] = {"state": str(self.state)}
        if self.state is SendState.SENDING and self.at is not None:
            value["at"] = self.at
        if self.state in (SendState.SENT, SendState.DONE):
            value["message_id"] = self.message_id
        if self.state is SendState.DONE:
            value["terminal"] = self.terminal
        return json_bytes(value)  # waits in the Redis pipeline until it flushes

    @classmethod
    def from_json(cls, raw: bytes | str) -> SendRecord:
        value = orjson.loads(raw)
        at = value.get("at")
        return cls(SendState(value["state"]), value.get("message_id"), value.get("terminal"),
                   float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None)


def advance(current: SendRecord | None, new: SendRecord) -> SendRecord:
    """`new` if the machine allows the step from `current`; raises InvalidTransition otherwise."""
    before = current.state if current is not None else None
    if new.state not in ALLOWED[before]:
        raise InvalidTransition(f"send record cannot go from {before} to {new.state}")
    return new


def sending(at: float | None = None) -> SendRecord:
    return SendRecord(SendState.SENDING, at=at)


def retrying() -> SendRecord:
    return SendRecord(SendState.RETRYING)


def sent(message_id: str) -> SendRecord:
    return SendRecord(SendState.SENT, message_id)


def done(terminal: str, message_id: str | None = None) -> SendRecord:
    return SendRecord(SendState.DONE, message_id, terminal)
