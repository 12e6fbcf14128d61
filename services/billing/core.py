"""Billing rules as a pure function: (tenant state, input event) -> (new state, billing events).

No clock and no I/O: every time comes from the events themselves, so the worker and
`apiplus billing replay` give the same output for the same input.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from apiplus.envelope import deterministic_id, make_event, parse_rfc3339, rfc3339
from apiplus.errors import ErrorCode, PermanentError
from services.billing.pricing import Catalog, Line, quote

PRODUCER = "apiplus-billing"
INPUT_TYPES = ("tenant.updated", "channel.activated", "channel.deactivated", "invoice.closing")
FREE_CHANNEL_LINE = "Trial channel (included in the premium plan)"


@dataclass(frozen=True)
class BillingRules:
    catalog: Catalog
    notice_days: int = 10
    seen_window: int = 5000  # event ids remembered per tenant for deduplication
    closed_window: int = 36  # invoice periods remembered per tenant


@dataclass(frozen=True)
class TenantState:
    tenant_id: str
    plan: str | None = None  # None: never seen a tenant.updated
    due_day: int = 1
    created_at: str | None = None
    active: dict[str, str] = field(default_factory=dict)  # channel_id -> activated_at
    seen: tuple[str, ...] = ()
    closed: dict[str, str] = field(default_factory=dict)  # period -> invoice_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "plan": self.plan,
            "due_day": self.due_day,
            "created_at": self.created_at,
            "active": self.active,
            "seen": list(self.seen),
            "closed": self.closed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantState:
        return cls(
            tenant_id=data["tenant_id"],
            plan=data.get("plan"),
            due_day=int(data.get("due_day", 1)),
            created_at=data.get("created_at"),
            active=dict(data.get("active", {})),
            seen=tuple(data.get("seen", ())),
            closed=dict(data.get("closed", {})),
        )

    def but(self, **changes: Any) -> TenantState:
        """A copy with `changes`. Values are never changed in place (the worker's table and an aborted
        batch's rollback rely on it): every change is a new copy, one per applied event.

        Copies the instance's fields directly rather than through the frozen dataclass's `__init__`
        (seven guarded `object.__setattr__` calls): 3.3 -> 0.6 µs, and `apply` copies once per event."""
        unknown = changes.keys() - _STATE_FIELDS
        if unknown:
            raise TypeError(f"TenantState has no field {sorted(unknown)[0]!r}")
        new = object.__new__(TenantState)
        fields = new.__dict__
        fields.update(self.__dict__)
        fields.update(changes)
        return new

    def encode(self) -> bytes:
        """The changelog value: `to_dict` as JSON, written by orjson straight from the dataclass (its
        fields in declaration order, the `seen` tuple as a list), without building the dict first."""
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> TenantState:
        return cls.from_dict(orjson.loads(raw))

    @property
    def premium(self) -> bool:
        return self.plan == "premium"

    @property
    def free_channels(self) -> int:
        return 1 if self.premium else 0

    def paid_channels(self) -> int:
        return max(0, len(self.active) - self.free_channels)


_STATE_FIELDS = frozenset(f.name for f in fields(TenantState))


def due_date(year: int, month: int, due_day: int) -> date:
    """The due date in a month; a day past the month's end falls on its last day (31 -> 28 Feb)."""
    return date(year, month, min(due_day, calendar.monthrange(year, month)[1]))


@lru_cache(maxsize=4096)  # asked once per paid activation; activations of a day share few (date, due day) pairs
def next_due_date(today: date, due_day: int) -> date:
    this_month = due_date(today.year, today.month, due_day)
    if this_month >= today:
        return this_month
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return due_date(year, month, due_day)


def apply(
    state: TenantState | None, event: dict[str, Any], rules: BillingRules
) -> tuple[TenantState | None, list[dict[str, Any]]]:
    """Apply one validated input event. Redelivery of a seen event id changes nothing."""
    kind = event["type"]
    event_id = event["event_id"]
    if state is not None and event_id in state.seen:
        return state, []
    current = state or TenantState(tenant_id=event["tenant_id"])
    out: list[dict[str, Any]] = []
    # Each handler returns the fields it changes; the copy that also remembers the event id is the one
    # copy of the state this event makes.
    changes: dict[str, Any]
    if kind == "tenant.updated":
        changes = _tenant_updated(current, event)
    elif kind == "channel.activated":
        changes, out = _activated(current, state is None or current.plan is None, event, rules)
    elif kind == "channel.deactivated":
        changes = _deactivated(current, event)
    elif kind == "invoice.closing":
        if current.plan is None:
            raise PermanentError(
                ErrorCode.INVALID_VALUE, "invoice.closing for a tenant never seen in tenant.updated", field="tenant_id"
            )
        moment = parse_rfc3339(event["occurred_at"])
        closed, out = close_invoice(current, event["invoice_id"], moment, rules, "upstream")
        changes = {"closed": closed.closed}
    else:
        raise PermanentError(ErrorCode.UNKNOWN_EVENT, f"billing does not handle events of type {kind!r}", "type")
    return current.but(seen=(*current.seen, event_id)[-rules.seen_window :], **changes), out


def _tenant_updated(state: TenantState, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "plan": event["plan"],
        "due_day": int(event["invoice_due_day"]),
        "created_at": state.created_at or event["occurred_at"],
    }


def _activated(
    state: TenantState, unknown: bool, event: dict[str, Any], rules: BillingRules
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    channel_id = event["channel_id"]
    if unknown or not state.premium:
        return {}, [_rejected(state, event, "unknown_tenant" if unknown else "premium_required")]
    if channel_id in state.active:
        return {}, []  # already active: activating twice adds no channel and no charge
    if len(state.active) < state.free_channels:
        return {"active": {**state.active, channel_id: event["occurred_at"]}}, []  # the free channel
    out = [_charged(state, event, rules)]
    notice = _purchase_notice(state, event, rules)
    if notice is not None:
        out.append(notice)
    return {"active": {**state.active, channel_id: event["occurred_at"]}}, out


def _caused_by(kind: str, tenant_id: str, event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A billing event caused by one input event about a channel: its id derives from the input's."""
    return make_event(
        kind,
        event_id=deterministic_id(kind, event["event_id"]),
        occurred_at=event["occurred_at"],
        producer=PRODUCER,
        tenant_id=tenant_id,
        channel_id=event["channel_id"],
        **fields,
    )


def _rejected(state: TenantState, event: dict[str, Any], reason: str) -> dict[str, Any]:
    return _caused_by("activation.rejected", state.tenant_id, event, reason=reason,
                      source_event_id=event["event_id"])


def _charged(state: TenantState, event: dict[str, Any], rules: BillingRules) -> dict[str, Any]:
    return _caused_by(
        "channel.charged", state.tenant_id, event,
        charge_id=deterministic_id("charge", state.tenant_id, event["channel_id"], event["event_id"]),
        amount_cents=rules.catalog.single_cents,
        currency=rules.catalog.currency,
        reason="activation",
        source_event_id=event["event_id"],
    )


def _purchase_notice(prior: TenantState, event: dict[str, Any], rules: BillingRules) -> dict[str, Any] | None:
    """A paid activation close to the due date is charged now and again on the invoice: say so.
    `prior` is the tenant before this activation, which adds one paid channel."""
    # occurred_at is validated as UTC (`...Z`), so its first ten characters are the UTC date: no need
    # to parse the whole timestamp for every paid activation.
    today = date.fromisoformat(event["occurred_at"][:10])
    due = next_due_date(today, prior.due_day)
    days_before = (due - today).days
    if days_before > rules.notice_days:
        return None
    return _caused_by(
        "purchase.notice", prior.tenant_id, event,
        days_before_due=days_before,
        due_date=due.isoformat(),
        charged_now_cents=rules.catalog.single_cents,
        next_invoice_cents=quote(rules.catalog, prior.paid_channels() + 1).total_cents,
        currency=rules.catalog.currency,
        message=(
            f"This channel is charged now and again on the invoice due {due.isoformat()} "
            f"({days_before} days away): there is no proration."
        ),
    )


def _deactivated(state: TenantState, event: dict[str, Any]) -> dict[str, Any]:
    if event["channel_id"] not in state.active:
        return {}
    return {"active": {k: v for k, v in state.active.items() if k != event["channel_id"]}}


def close_invoice(
    state: TenantState,
    invoice_id: str,
    moment: datetime,
    rules: BillingRules,
    trigger: str,
    period: str | None = None,
) -> tuple[TenantState, list[dict[str, Any]]]:
    """One invoice per period: a second closing (same id or same period) yields nothing new."""
    period = period or f"{moment.year:04d}-{moment.month:02d}"
    if period in state.closed or invoice_id in state.closed.values():
        return state, []
    priced = quote(rules.catalog, state.paid_channels())
    lines = list(priced.lines)
    if state.free_channels and state.active:
        lines.insert(0, Line(FREE_CHANNEL_LINE, package_size=1, quantity=1, unit_amount_cents=0))
    invoice = make_event(
        "invoice.closed",
        event_id=deterministic_id("invoice.closed", state.tenant_id, invoice_id),
        occurred_at=rfc3339(moment),
        producer=PRODUCER,
        invoice_id=invoice_id,
        tenant_id=state.tenant_id,
        period=period,
        lines=[line.as_dict() for line in lines],
        total_cents=priced.total_cents,
        currency=rules.catalog.currency,
        channels=len(state.active),
        paid_channels=state.paid_channels(),
        trigger=trigger,
    )
    if priced.suggestion is not None:
        invoice["suggestion"] = priced.suggestion
    closed = dict(list({**state.closed, period: invoice_id}.items())[-rules.closed_window :])
    return state.but(closed=closed), [invoice]


def due_closing(state: TenantState, now: datetime, grace: timedelta) -> tuple[str, datetime, str] | None:
    """The timer's closing for the current period, if the due day (plus grace) has passed unclosed."""
    if state.plan is None or state.created_at is None:
        return None
    due = due_date(now.year, now.month, state.due_day)
    due_at = datetime(due.year, due.month, due.day, tzinfo=UTC) + grace
    period = f"{due.year:04d}-{due.month:02d}"
    if now < due_at or period in state.closed or parse_rfc3339(state.created_at) >= due_at - grace:
        return None
    return f"auto-{state.tenant_id}-{period}", due_at, period
