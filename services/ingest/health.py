"""Per-channel connection health from canonical events: state, windows and derived conditions. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson

from apiplus.envelope import deterministic_id, make_event, parse_rfc3339, rfc3339
from services.ingest.core import PRODUCER

CONDITIONS = ("flapping", "qr_loop", "stale", "logged_out")
STATES = ("unknown", "connecting", "qr", "open", "closed", "logged_out")
# A 515 follows every successful QR scan: a normal restart, not a sign of trouble.
NOT_A_DISCONNECT = frozenset({"restart_required"})
NO_TIME = timedelta(0)


@dataclass(frozen=True)
class HealthRules:
    flapping_disconnects: int = 5
    flapping_window: timedelta = timedelta(minutes=10)
    qr_loop_codes: int = 5
    stale_after: timedelta = timedelta(minutes=30)
    history: timedelta = timedelta(hours=1)


class ChannelHealth(NamedTuple):
    """One channel's health: immutable, and a tuple so that rebuilding it per event stays cheap (it is
    rebuilt for nearly every event ingest publishes; a frozen dataclass's `replace` cost several µs)."""

    channel_id: str
    source: str | None = None
    state: str = "unknown"
    since: str | None = None
    last_event_at: str | None = None
    disconnects: tuple[tuple[str, str], ...] = ()  # (occurred_at, reason) within the last hour
    qr_since_open: int = 0
    last_code: int | None = None
    last_reason: str | None = None
    conditions: tuple[str, ...] = ()
    version: int = 0  # health events emitted so far; part of their ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "source": self.source,
            "state": self.state,
            "since": self.since,
            "last_event_at": self.last_event_at,
            "disconnects": [list(d) for d in self.disconnects],
            "qr_since_open": self.qr_since_open,
            "last_code": self.last_code,
            "last_reason": self.last_reason,
            "conditions": list(self.conditions),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelHealth:
        return cls(
            channel_id=data["channel_id"],
            source=data.get("source"),
            state=data.get("state", "unknown"),
            since=data.get("since"),
            last_event_at=data.get("last_event_at"),
            disconnects=tuple((d[0], d[1]) for d in data.get("disconnects", ())),
            qr_since_open=int(data.get("qr_since_open", 0)),
            last_code=data.get("last_code"),
            last_reason=data.get("last_reason"),
            conditions=tuple(data.get("conditions", ())),
            version=int(data.get("version", 0)),
        )

    def encode(self) -> bytes:
        """The changelog value (`to_dict` as JSON)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, raw: bytes) -> ChannelHealth:
        return cls.from_dict(orjson.loads(raw))

    def disconnects_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.disconnects:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def _later(a: str | None, b: str) -> tuple[str, datetime]:
    """The later of two event times (`b` on a tie) and that time parsed."""
    moment = parse_rfc3339(b)
    if a is None or a == b:
        return b, moment
    earlier = parse_rfc3339(a)
    return (b, moment) if moment >= earlier else (a, earlier)


def observe(
    current: ChannelHealth | None, event: dict[str, Any], rules: HealthRules
) -> tuple[ChannelHealth, dict[str, Any] | None]:
    """Fold one canonical event in; a channel.health event when state or conditions changed.

    The new fields are worked out first and the (immutable) health is rebuilt once, only when one of
    them changed: this runs for every event ingest publishes."""
    h = current or ChannelHealth(channel_id=event["channel_id"])
    at = event["occurred_at"]
    source = event.get("source", h.source)
    last_event_at, now = _later(h.last_event_at, at)
    state, since, disconnects, qr_since_open = h.state, h.since, h.disconnects, h.qr_since_open
    last_code, last_reason = h.last_code, h.last_reason
    kind = event["type"]
    if kind == "connection.update":
        conn = event["connection"]
        new_state = conn["state"]
        last_code, last_reason = conn.get("code"), conn.get("reason")
        if new_state in ("closed", "logged_out"):
            disconnects = (*disconnects, (at, last_reason or new_state))
        if new_state != state:
            state, since = new_state, at
        if new_state == "open":
            qr_since_open = 0
    elif kind == "qr.updated":
        qr_since_open += 1
        if state != "qr":
            state, since = "qr", at
    if (source, last_event_at, state, since, disconnects, qr_since_open, last_code, last_reason) != (
        h.source, h.last_event_at, h.state, h.since, h.disconnects, h.qr_since_open, h.last_code, h.last_reason
    ):
        h = ChannelHealth(h.channel_id, source, state, since, last_event_at, disconnects, qr_since_open, last_code,
                          last_reason, h.conditions, h.version)
    # `now` is the channel's last event time itself: stale only under a zero threshold, no need to parse it again.
    return _settle(current, h, now, rules, stale=h.state == "open" and rules.stale_after <= NO_TIME)


def settle(
    before: ChannelHealth | None, h: ChannelHealth, now: datetime, rules: HealthRules
) -> tuple[ChannelHealth, dict[str, Any] | None]:
    """Trim the windows, derive conditions at `now`, and say whether anything visible changed."""
    stale = False
    if h.state == "open" and h.last_event_at:
        stale = now - parse_rfc3339(h.last_event_at) >= rules.stale_after
    return _settle(before, h, now, rules, stale)


def _settle(
    before: ChannelHealth | None, h: ChannelHealth, now: datetime, rules: HealthRules, stale: bool
) -> tuple[ChannelHealth, dict[str, Any] | None]:
    kept = h.disconnects
    recent = 0
    if kept:
        horizon = now - rules.history
        flap_from = now - rules.flapping_window
        times = [(parse_rfc3339(at), reason) for at, reason in kept]
        kept = tuple(d for d, (moment, _) in zip(kept, times, strict=True) if moment >= horizon)
        recent = sum(1 for moment, reason in times
                     if moment >= horizon and reason not in NOT_A_DISCONNECT and moment >= flap_from)
    conditions: tuple[str, ...] = ()
    if recent >= rules.flapping_disconnects:
        conditions += ("flapping",)
    if h.qr_since_open >= rules.qr_loop_codes and h.state != "open":
        conditions += ("qr_loop",)
    if stale:
        conditions += ("stale",)
    if h.state == "logged_out":
        conditions += ("logged_out",)
    changed = before is None or (before.state, before.conditions) != (h.state, conditions)
    if changed:
        h = h._replace(disconnects=kept, conditions=conditions, version=h.version + 1)
        return h, health_event(h, now)
    if kept != h.disconnects or conditions != h.conditions:
        h = h._replace(disconnects=kept, conditions=conditions)
    return h, None


def health_event(h: ChannelHealth, now: datetime) -> dict[str, Any]:
    occurred_at = rfc3339(now)
    return make_event(
        "channel.health",
        event_id=deterministic_id("channel.health", h.channel_id, h.version),
        occurred_at=occurred_at,
        producer=PRODUCER,
        channel_id=h.channel_id,
        source=h.source,
        state=h.state,
        since=h.since or occurred_at,
        last_event_at=h.last_event_at or occurred_at,
        conditions=list(h.conditions),
        disconnects_last_hour=h.disconnects_by_reason(),
        qr_since_open=h.qr_since_open,
        last_code=h.last_code,
        last_reason=h.last_reason,
    )
