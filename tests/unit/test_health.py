"""Connection health: state, flapping, QR loops, stale channels, and which changes are published."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apiplus.schemas import validate
from services.ingest.health import ChannelHealth, HealthRules, observe, settle

RULES = HealthRules(flapping_disconnects=3, flapping_window=timedelta(minutes=10), qr_loop_codes=3,
                    stale_after=timedelta(minutes=30))
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def conn(state: str, minutes: float, code: int | None = None, reason: str | None = None) -> dict[str, Any]:
    return {"type": "connection.update", "channel_id": "ch", "source": "evolution", "occurred_at": at(minutes),
            "connection": {"state": state, "code": code, "reason": reason}}


def qr(minutes: float) -> dict[str, Any]:
    return {"type": "qr.updated", "channel_id": "ch", "source": "evolution", "occurred_at": at(minutes)}


def fold(events: list[dict[str, Any]]) -> tuple[ChannelHealth, list[dict[str, Any]]]:
    h: ChannelHealth | None = None
    changes = []
    for event in events:
        h, change = observe(h, event, RULES)
        if change is not None:
            validate("channel.health", change)
            changes.append(change)
    assert h is not None
    return h, changes


def test_state_changes_are_published_and_repeats_are_not() -> None:
    h, changes = fold([conn("connecting", 0), conn("open", 1), conn("open", 2)])
    assert [c["state"] for c in changes] == ["connecting", "open"]
    assert h.since == at(1)


def test_flapping_after_n_disconnects_in_the_window() -> None:
    events = []
    for i in range(3):
        events += [conn("closed", i * 2, 408, "timed_out"), conn("open", i * 2 + 1)]
    h, changes = fold(events)
    assert "flapping" in h.conditions
    assert h.disconnects_by_reason() == {"timed_out": 3}
    assert "flapping" in changes[-1]["conditions"]


def test_restart_after_qr_scan_is_not_flapping() -> None:
    events = []
    for i in range(4):
        events += [conn("closed", i, 515, "restart_required"), conn("open", i + 0.5)]
    h, _ = fold(events)
    assert "flapping" not in h.conditions


def test_disconnects_spread_beyond_the_window_are_not_flapping() -> None:
    h, _ = fold([conn("closed", 0, 408, "timed_out"), conn("closed", 20, 408, "timed_out"),
                 conn("closed", 40, 408, "timed_out")])
    assert "flapping" not in h.conditions


def test_qr_loop_until_open() -> None:
    h, _ = fold([qr(0), qr(1), qr(2)])
    assert h.state == "qr"
    assert "qr_loop" in h.conditions
    h, change = observe(h, conn("open", 3), RULES)
    assert h.qr_since_open == 0
    assert h.conditions == ()
    assert change is not None
    assert change["state"] == "open"


def test_logged_out_is_terminal_condition() -> None:
    h, changes = fold([conn("open", 0), conn("logged_out", 1, 401, "logged_out")])
    assert h.conditions == ("logged_out",)
    assert changes[-1]["state"] == "logged_out"


def test_stale_when_open_and_silent() -> None:
    h, _ = fold([conn("open", 0)])
    _same, change = settle(h, h, T0 + timedelta(minutes=10), RULES)
    assert change is None
    later, change = settle(h, h, T0 + timedelta(minutes=31), RULES)
    assert change is not None
    assert change["conditions"] == ["stale"]
    assert later.version == h.version + 1


def test_health_round_trips_through_its_changelog_form() -> None:
    h, _ = fold([conn("open", 0), conn("closed", 1, 428, "connection_closed"), qr(2)])
    assert ChannelHealth.from_dict(h.to_dict()) == h


def test_messages_move_only_the_last_event_time_and_never_back() -> None:
    h, _ = fold([conn("open", 0)])
    message = {"type": "message.received", "channel_id": "ch", "source": "evolution", "occurred_at": at(5)}
    later, change = observe(h, message, RULES)
    assert change is None
    assert later.to_dict() == {**h.to_dict(), "last_event_at": at(5)}
    again, change = observe(later, {**message, "occurred_at": at(2)}, RULES)
    assert change is None
    assert again == later


def test_disconnects_older_than_the_history_are_trimmed() -> None:
    h, _ = fold([conn("closed", 0, 408, "timed_out"), conn("open", 1), conn("closed", 50, 408, "timed_out"),
                 conn("open", 51)])
    assert h.disconnects_by_reason() == {"timed_out": 2}
    h, _ = observe(h, conn("open", 70), RULES)
    assert h.disconnects == ((at(50), "timed_out"),)
