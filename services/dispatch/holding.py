"""When a queued command may go: its channel's connection state, and when it expires. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apiplus.errors import ErrorCode
from services.dispatch.outcome import Failure

NOT_AFTER_PASSED = Failure(ErrorCode.NOT_AFTER_PASSED, "the command's not_after passed", field="not_after")
HELD_TOO_LONG = Failure(ErrorCode.HELD_TOO_LONG, "held longer than the configured limit")


@dataclass(frozen=True)
class Deadlines:
    """A queued command's clock facts, as epoch seconds."""

    accepted_at: float
    not_after: float | None
    max_hold: float

    @property
    def hold_until(self) -> float:
        """The latest a held command may wait for its channel."""
        deadline = self.accepted_at + self.max_hold
        return deadline if self.not_after is None else min(deadline, self.not_after)


def expiry(deadlines: Deadlines, now: float) -> Failure | None:
    """Why the command expired by `now`, or None."""
    if deadlines.not_after is not None and deadlines.not_after <= now:
        return NOT_AFTER_PASSED
    if now >= deadlines.accepted_at + deadlines.max_hold:
        return HELD_TOO_LONG
    return None


def is_open(health: Mapping[str, Any] | None, *, send_when_unknown: bool) -> bool:
    """Whether a channel may send: its `channel.health` state is `open`.

    No health row, or state `unknown` (never seen a connection event), follows `send_when_unknown`, so a
    new channel works before ingest has seen it.
    """
    state = health.get("state") if health is not None else "unknown"
    if state == "unknown":
        return send_when_unknown
    return state == "open"
