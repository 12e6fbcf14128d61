"""Billing rules: free trial channel, no proration, premium only, one invoice per period, idempotence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiplus.errors import PermanentError
from apiplus.schemas import validate
from services.billing.core import BillingRules, TenantState, apply, close_invoice, due_closing
from services.billing.pricing import Catalog

RULES = BillingRules(Catalog.load())


def tenant(due_day: int = 30, plan: str = "premium", at: str = "2026-11-01T00:00:00Z") -> dict[str, Any]:
    return {"event_id": f"t-{plan}-{due_day}", "type": "tenant.updated", "occurred_at": at, "tenant_id": "acme",
            "plan": plan, "invoice_due_day": due_day}


def activated(channel: str, at: str, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"a-{channel}-{at}", "type": "channel.activated", "occurred_at": at,
            "tenant_id": "acme", "channel_id": channel}


def deactivated(channel: str, at: str) -> dict[str, Any]:
    return {"event_id": f"d-{channel}-{at}", "type": "channel.deactivated", "occurred_at": at, "tenant_id": "acme",
            "channel_id": channel}


def closing(invoice_id: str, at: str, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"c-{invoice_id}-{at}", "type": "invoice.closing", "occurred_at": at,
            "tenant_id": "acme", "invoice_id": invoice_id}


def run(events: list[dict[str, Any]]) -> tuple[TenantState | None, list[dict[str, Any]]]:
    state: TenantState | None = None
    out: list[dict[str, Any]] = []
    for event in events:
        state, produced = apply(state, event, RULES)
        out += produced
    for event in out:
        validate(event["type"], event)
    return state, out


def of(out: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in out if e["type"] == kind]


def test_worked_example_due_30_one_channel_bought_on_day_05() -> None:
    _, out = run([tenant(30), activated("trial", "2026-11-01T10:00:00Z"), activated("c1", "2026-11-05T10:00:00Z"),
                  closing("inv-11", "2026-11-30T00:00:00Z")])
    assert [c["amount_cents"] for c in of(out, "channel.charged")] == [500]
    assert of(out, "invoice.closed")[0]["total_cents"] == 500
    assert of(out, "purchase.notice") == []  # 25 days before the due day


def test_worked_example_due_15_two_channels_bought_on_day_05() -> None:
    _, out = run([tenant(15), activated("trial", "2026-11-01T10:00:00Z"), activated("c1", "2026-11-05T10:00:00Z"),
                  activated("c2", "2026-11-05T10:01:00Z"), closing("inv-11", "2026-11-15T00:00:00Z")])
    assert sum(c["amount_cents"] for c in of(out, "channel.charged")) == 1000
    assert of(out, "invoice.closed")[0]["total_cents"] == 1000
    notices = of(out, "purchase.notice")
    assert [n["days_before_due"] for n in notices] == [10, 10]
    assert notices[0]["due_date"] == "2026-11-15"


def test_free_trial_channel_is_not_charged_and_is_a_zero_line() -> None:
    _, out = run([tenant(), activated("trial", "2026-11-02T10:00:00Z"), closing("inv", "2026-11-30T00:00:00Z")])
    assert of(out, "channel.charged") == []
    invoice = of(out, "invoice.closed")[0]
    assert invoice["total_cents"] == 0
    assert invoice["lines"][0]["amount_cents"] == 0
    assert invoice["lines"][0]["package_size"] == 1


def test_invoice_prices_eleven_paid_channels_at_forty_reais() -> None:
    events = [tenant()] + [activated(f"c{i}", "2026-11-02T10:00:00Z") for i in range(12)]
    _, out = run([*events, closing("inv", "2026-11-30T00:00:00Z")])
    invoice = of(out, "invoice.closed")[0]
    assert invoice["paid_channels"] == 11
    assert invoice["total_cents"] == 4000


def test_invoice_carries_a_suggestion_without_changing_the_total() -> None:
    events = [tenant()] + [activated(f"c{i}", "2026-11-02T10:00:00Z") for i in range(26)]
    _, out = run([*events, closing("inv", "2026-11-30T00:00:00Z")])
    invoice = of(out, "invoice.closed")[0]
    assert invoice["total_cents"] == 8500
    assert invoice["suggestion"]["saving_cents"] == 500


@pytest.mark.parametrize(("plan", "reason"), [("basic", "premium_required"), (None, "unknown_tenant")])
def test_non_premium_activation_is_rejected_and_not_charged(plan: str | None, reason: str) -> None:
    events = ([tenant(plan=plan)] if plan else []) + [activated("c1", "2026-11-02T10:00:00Z")]
    state, out = run(events)
    assert [e["type"] for e in out] == ["activation.rejected"]
    assert out[0]["reason"] == reason
    assert state is not None
    assert state.active == {}


def test_deactivated_channels_are_not_invoiced_and_not_refunded() -> None:
    _, out = run([tenant(), activated("trial", "2026-11-01T10:00:00Z"), activated("c1", "2026-11-02T10:00:00Z"),
                  activated("c2", "2026-11-02T10:00:00Z"), deactivated("c2", "2026-11-20T10:00:00Z"),
                  closing("inv", "2026-11-30T00:00:00Z")])
    assert len(of(out, "channel.charged")) == 2
    assert of(out, "invoice.closed")[0]["total_cents"] == 500
    assert all(e["amount_cents"] >= 0 for e in of(out, "channel.charged"))


def test_second_closing_for_the_same_invoice_or_period_yields_nothing() -> None:
    _, out = run([tenant(), activated("trial", "2026-11-01T10:00:00Z"), closing("inv", "2026-11-30T00:00:00Z"),
                  closing("inv", "2026-11-30T01:00:00Z"), closing("other", "2026-11-30T02:00:00Z")])
    assert len(of(out, "invoice.closed")) == 1


def test_activating_an_active_channel_twice_charges_once() -> None:
    _, out = run([tenant(), activated("t", "2026-11-01T10:00:00Z"), activated("c1", "2026-11-02T10:00:00Z", "e1"),
                  activated("c1", "2026-11-02T11:00:00Z", "e2")])
    assert len(of(out, "channel.charged")) == 1


def test_invoice_closing_for_unknown_tenant_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError):
        apply(None, closing("inv", "2026-11-30T00:00:00Z"), RULES)


def test_due_day_timer_closes_an_unclosed_period_once() -> None:
    state, _ = run([tenant(15, at="2026-10-01T00:00:00Z"), activated("t", "2026-10-02T00:00:00Z")])
    assert state is not None
    grace = timedelta(hours=24)
    assert due_closing(state, datetime(2026, 11, 15, 12, tzinfo=UTC), grace) is None  # inside the grace
    due = due_closing(state, datetime(2026, 11, 16, 1, tzinfo=UTC), grace)
    assert due is not None
    invoice_id, moment, period = due
    state, out = close_invoice(state, invoice_id, moment, RULES, "due_day_timer", period)
    assert out[0]["period"] == "2026-11"
    assert out[0]["trigger"] == "due_day_timer"
    assert due_closing(state, datetime(2026, 11, 20, tzinfo=UTC), grace) is None


def test_due_day_31_falls_on_the_last_day_of_short_months() -> None:
    _state, out = run([tenant(31), activated("t", "2026-02-01T00:00:00Z"), activated("c", "2026-02-25T00:00:00Z")])
    notice = of(out, "purchase.notice")[0]
    assert notice["due_date"] == "2026-02-28"
    assert notice["days_before_due"] == 3


_EVENTS = [tenant(), activated("trial", "2026-11-01T10:00:00Z"), activated("c1", "2026-11-03T10:00:00Z"),
           activated("c2", "2026-11-25T10:00:00Z"), deactivated("c1", "2026-11-26T10:00:00Z"),
           activated("c1", "2026-11-27T10:00:00Z"), closing("inv-11", "2026-11-30T00:00:00Z")]


@given(st.lists(st.integers(min_value=0, max_value=len(_EVENTS) - 1), max_size=12))
def test_redelivering_any_event_changes_nothing(repeats: list[int]) -> None:
    _, expected = run(_EVENTS)
    stream: list[dict[str, Any]] = []
    for i, event in enumerate(_EVENTS):
        stream.append(event)
        stream += [_EVENTS[j] for j in repeats if j <= i]  # redeliveries of events already seen
    _, out = run(stream)
    assert out == expected


@given(st.integers(min_value=1, max_value=len(_EVENTS)))
def test_the_changelog_codec_round_trips_every_state_and_keeps_the_dict_format(upto: int) -> None:
    state, _ = run(_EVENTS[:upto])
    assert state is not None
    assert TenantState.decode(state.encode()) == state
    assert state.encode() == orjson.dumps(state.to_dict())  # byte for byte what older workers wrote


def test_but_copies_and_never_changes_the_original() -> None:
    state, _ = run(_EVENTS[:2])
    assert state is not None
    before = state.to_dict()
    changed = state.but(active={**state.active, "c9": "2026-11-28T00:00:00Z"}, plan="basic")
    assert state.to_dict() == before
    assert (changed.plan, sorted(changed.active), changed.seen) == ("basic", ["c9", "trial"], state.seen)
