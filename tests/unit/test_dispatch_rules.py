"""dispatch's pure rules with `now` as an argument: pacing, holding, expiry, the send record's machine."""

from __future__ import annotations

import pytest

from services.dispatch.holding import HELD_TOO_LONG, NOT_AFTER_PASSED, Deadlines, expiry, is_open
from services.dispatch.pacing import Pacer
from services.dispatch.progress import Mark, Progress
from services.dispatch.providers import PacingDefaults, PacingRule, configure
from services.dispatch.record import (
    ALLOWED,
    InvalidTransition,
    SendRecord,
    SendState,
    advance,
    done,
    retrying,
    sending,
    sent,
)

T0 = 1_700_000_000.0
DEFAULTS = PacingDefaults(min_gap_ms=4000, jitter_ms=3000, hourly_cap=300)


# --- pacing ---------------------------------------------------------------------------------------
def test_gap_plus_drawn_jitter_between_sends() -> None:
    rule = PacingRule(min_gap=4.0, jitter=3.0, hourly_cap=300)
    pacer = Pacer()
    assert pacer.delay(rule, "5511", T0) == 0.0
    pacer.sent(rule, "5511", T0, draw=0.5)
    assert pacer.delay(rule, "5511", T0) == pytest.approx(5.5)
    assert pacer.delay(rule, "5522", T0 + 5.0) == pytest.approx(0.5)
    assert pacer.delay(rule, "5511", T0 + 5.5) == 0.0


def test_hourly_cap_waits_for_the_oldest_send_to_leave_the_hour() -> None:
    rule = PacingRule(min_gap=0.0, jitter=0.0, hourly_cap=3)
    pacer = Pacer()
    for i in range(3):
        pacer.sent(rule, "5511", T0 + i * 10, draw=0.0)
    assert pacer.delay(rule, "5511", T0 + 30) == pytest.approx(3600 - 30)
    assert pacer.delay(rule, "5511", T0 + 3600) == 0.0  # the first send left the window
    assert len(pacer.sent_times) == 2


def test_recipient_gap_applies_only_to_the_same_recipient() -> None:
    rule = PacingRule(min_gap=1 / 80, jitter=0.0, hourly_cap=1000, recipient_gap=6.0)
    pacer = Pacer()
    pacer.sent(rule, "5511", T0, draw=0.9)
    assert pacer.delay(rule, "5522", T0 + 0.0125) == 0.0
    assert pacer.delay(rule, "5511", T0 + 1) == pytest.approx(5.0)


def test_provider_pacing_rules_and_channel_overrides() -> None:
    providers = configure()
    assert providers["uazapi"].pacing({}, DEFAULTS) == PacingRule(min_gap=4.0, jitter=3.0, hourly_cap=300)
    assert providers["evolution"].pacing({"min_gap_ms": 1500, "jitter_ms": 0, "hourly_cap": 50}, DEFAULTS) == \
        PacingRule(min_gap=1.5, jitter=0.0, hourly_cap=50)
    # Cloud API: its own throughput and pair rate; only the hourly cap is overridable.
    assert providers["cloudapi"].pacing({"min_gap_ms": 1500, "hourly_cap": 50}, DEFAULTS) == \
        PacingRule(min_gap=1 / 80, jitter=0.0, hourly_cap=50, recipient_gap=6.0)


# --- holding and expiry -----------------------------------------------------------------------------
def test_expiry_by_not_after_and_by_hold_limit() -> None:
    d = Deadlines(accepted_at=T0, not_after=T0 + 60, max_hold=3600)
    assert expiry(d, T0 + 59.9) is None
    assert expiry(d, T0 + 60) is NOT_AFTER_PASSED
    assert d.hold_until == T0 + 60
    d = Deadlines(accepted_at=T0, not_after=None, max_hold=3600)
    assert expiry(d, T0 + 3599) is None
    assert expiry(d, T0 + 3600) is HELD_TOO_LONG
    assert d.hold_until == T0 + 3600
    assert NOT_AFTER_PASSED.as_dict() == {"code": "not_after_passed", "field": "not_after",
                                          "message": "the command's not_after passed"}


@pytest.mark.parametrize(("row", "unknown", "expected"), [
    ({"state": "open"}, False, True),
    ({"state": "closed"}, True, False),
    ({"state": "logged_out"}, True, False),
    ({"state": "unknown"}, True, True),
    ({"state": "unknown"}, False, False),
    (None, True, True),
    (None, False, False),
])
def test_channel_is_open(row: dict[str, str] | None, unknown: bool, expected: bool) -> None:
    assert is_open(row, send_when_unknown=unknown) is expected


# --- the send record ----------------------------------------------------------------------------------
def test_the_happy_path_and_a_retry() -> None:
    record = advance(None, sending())
    record = advance(record, retrying())
    record = advance(record, sending())
    record = advance(record, sent("wamid.1"))
    record = advance(record, done("sent", "wamid.1"))
    assert record == SendRecord(SendState.DONE, "wamid.1", "sent")


@pytest.mark.parametrize(("before", "after"), [
    (None, SendState.SENT), (None, SendState.RETRYING),
    (SendState.SENT, SendState.SENDING), (SendState.SENT, SendState.RETRYING), (SendState.SENT, SendState.SENT),
    (SendState.RETRYING, SendState.SENT), (SendState.RETRYING, SendState.RETRYING),
    *[(SendState.DONE, s) for s in SendState],
])
def test_forbidden_steps_raise(before: SendState | None, after: SendState) -> None:
    current = None if before is None else SendRecord(before, "m" if before is SendState.SENT else None)
    with pytest.raises(InvalidTransition):
        advance(current, SendRecord(after, "m"))


def test_every_state_is_in_the_table_and_done_is_final() -> None:
    assert set(ALLOWED) == {None, *SendState}
    assert ALLOWED[SendState.DONE] == frozenset()


@pytest.mark.parametrize("record", [sending(), retrying(), sent("SIM1"), done("rejected"), done("sent", "SIM1")])
def test_record_json_round_trip_keeps_the_stored_format(record: SendRecord) -> None:
    assert SendRecord.from_json(record.to_json()) == record


def test_records_written_before_the_split_still_read() -> None:
    assert SendRecord.from_json(b'{"state":"done","terminal":"rejected"}') == done("rejected")
    assert SendRecord.from_json(b'{"state":"sent","message_id":"SIM9"}') == sent("SIM9")


# --- progress above the committed offset ------------------------------------------------------------
def test_progress_marks_only_go_forward_and_drop_below_the_frontier() -> None:
    progress = Progress().with_marks([(5, Mark.QUEUED), (6, Mark.FINISHED), (9, Mark.HELD)], frontier=5)
    progress = progress.with_marks([(5, Mark.HELD), (6, Mark.QUEUED)], frontier=None)
    assert progress.marks == {5: Mark.HELD, 6: Mark.FINISHED, 9: Mark.HELD}
    progress = progress.with_marks([(5, Mark.FINISHED)], frontier=7)
    assert progress.marks == {9: Mark.HELD}
    assert [progress.get(o) for o in (3, 6, 7, 8, 9)] == [Mark.FINISHED, Mark.FINISHED, Mark.NONE, Mark.NONE, Mark.HELD]


@pytest.mark.parametrize("marks", [{}, {100: Mark.FINISHED}, {i: Mark(i % 4) for i in range(1000, 4000) if i % 4}])
def test_progress_round_trips_through_its_stored_form(marks: dict[int, Mark]) -> None:
    progress = Progress(frontier=1000, marks=marks)
    assert Progress.decode(progress.encode()) == progress


def test_a_burst_of_finished_commands_stores_small() -> None:
    progress = Progress(frontier=0, marks=dict.fromkeys(range(1, 50000), Mark.FINISHED))
    assert len(progress.encode()) < 1000
