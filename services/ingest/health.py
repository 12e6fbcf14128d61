"""Per-channel connection health from canonical events: state, windows and derived conditions. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from apiplus.envelope import deterministic_id, make_event, parse_rfc3339, rfc3339
from services.ingest.core import PRODUCER

CONDITIONS = ("flapping", "qr_loop", "stale", "logged_out")
STATES = ("unknown", "connecting", "qr", "open", "closed", "logged_out")
# A 515 follows every successful QR scan: a normal restart, not a sign of trouble.
NOT_A_DISCONNECT = frozenset({"restart_required"})


@dataclass(frozen=True)
class HealthRules:
    flapping_disconnects: int = 5
    flapping_window: timedelta = timedelta(minutes=10)
    qr_loop_codes: int = 5
    stale_after: timedelta = timedelta(minutes=30)
    history: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class ChannelHealth:
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

    def disconnects_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.disconnects:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def _later(a: str | None, b: str) -> str:
    return b if a is None or parse_rfc3339(b) >= parse_rfc3339(a) else a


def observe(
    current: ChannelHealth | None, event: dict[str, Any], rules: HealthRules
) -> tuple[ChannelHealth, dict[str, Any] | None]:
    """Fold one canonical event in; a channel.health event when state or conditions changed."""
    h = current or ChannelHealth(channel_id=event["channel_id"])
    at = event["occurred_at"]
    h = replace(h, source=event.get("source", h.source), last_event_at=_later(h.last_event_at, at))
    kind = event["type"]
    if kind == "connection.update":
        conn = event["connection"]
        state = conn["state"]
        reason = conn.get("reason")
        if state in ("closed", "logged_out"):
            h = replace(h, disconnects=(*h.disconnects, (at, reason or state)))
        if state != h.state:
            h = replace(h, state=state, since=at)
        h = replace(h, last_code=conn.get("code"), last_reason=reason)
        if state == "open":
            h = replace(h, qr_since_open=0)
    elif kind == "qr.updated":
        h = replace(h, qr_since_open=h.qr_since_open + 1)
        if h.state != "qr":
            h = replace(h, state="qr", since=at)
    return settle(current, h, parse_rfc3339(h.last_event_at or at), rules)


def settle(
    before: ChannelHealth | None, h: ChannelHealth, now: datetime, rules: HealthRules
) -> tuple[ChannelHealth, dict[str, Any] | None]:
    """Trim the windows, derive conditions at `now`, and say whether anything visible changed."""
    horizon = now - rules.history
    kept = tuple(d for d in h.disconnects if parse_rfc3339(d[0]) >= horizon)
    flap_from = now - rules.flapping_window
    recent = sum(1 for at, reason in kept if reason not in NOT_A_DISCONNECT and parse_rfc3339(at) >= flap_from)
    conditions = []
    if recent >= rules.flapping_disconnects:
        conditions.append("flapping")
    if h.qr_since_open >= rules.qr_loop_codes and h.state != "open":
        conditions.append("qr_loop")
    if h.state == "open" and h.last_event_at and now - parse_rfc3339(h.last_event_at) >= rules.stale_after:
        conditions.append("stale")
    if h.state == "logged_out":
        conditions.append("logged_out")
    h = replace(h, disconnects=kept, conditions=tuple(conditions))
    changed = before is None or (before.state, before.conditions) != (h.state, h.conditions)
    if not changed:
        return h, None
    h = replace(h, version=h.version + 1)
    return h, health_event(h, now)


def health_event(h: ChannelHealth, now: datetime) -> dict[str, Any]:
    return make_event(
        "channel.health",
        event_id=deterministic_id("channel.health", h.channel_id, h.version),
        occurred_at=rfc3339(now),
        producer=PRODUCER,
        channel_id=h.channel_id,
        source=h.source,
        state=h.state,
        since=h.since or rfc3339(now),
        last_event_at=h.last_event_at or rfc3339(now),
        conditions=list(h.conditions),
        disconnects_last_hour=h.disconnects_by_reason(),
        qr_since_open=h.qr_since_open,
        last_code=h.last_code,
        last_reason=h.last_reason,
    )
