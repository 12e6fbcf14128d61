"""The closed loop's pure parts: shared records, receipts state machine, replies and typed answers, echoes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiplus import correlation
from apiplus.correlation import (
    Echo,
    Offer,
    Option,
    RecordError,
    SentRecord,
    decode_or_none,
    fingerprint,
    options_of,
    pick_echo,
)
from apiplus.schemas import validate
from services.dispatch import loop, receipts
from services.dispatch.core import Channel, degrade, parse_command, token_digest
from services.dispatch.receipts import StatusInput, plan, process, receipt_status
from services.ingest import replies
from services.ingest.replies import answer, correlate, fold, lookups

TOKEN = "tok"
TO = "5511988887777"
BUTTONS = {"kind": "buttons", "header": "Pedido #1001", "body": "Confirma o pedido #1001?",
           "buttons": [{"id": "yes", "title": "Confirmar"}, {"id": "no", "title": "Cancelar"}]}
LIST = {"kind": "list", "body": "Escolha", "button": "Ver", "sections": [
    {"title": "Bebidas", "rows": [{"id": "cafe", "title": "Café"}, {"id": "cha", "title": "Chá"}]},
    {"title": "Doces", "rows": [{"id": "bolo", "title": "Bolo de Maçã", "description": "fatia"}]},
]}


def parsed(message: dict[str, Any], command_id: str = "cmd-1") -> Any:
    return parse_command({"command_id": command_id, "channel_id": "loja", "token": TOKEN, "to": TO,
                          "message": message, "fallback": "text"})


def channel(mode: str = "plain", instance: str | None = "inst-1") -> Channel:
    return Channel("loja", "t1", token_digest(TOKEN), "uazapi", mode, "active", provider_instance=instance)


def sent(command_id: str = "cmd-1") -> SentRecord:
    return SentRecord(command_id, "loja", TO, "buttons", 1764234000.0)


# --- shared records ----------------------------------------------------------------------------------
def test_sent_record_round_trips_with_options_and_resolution() -> None:
    kind, options = options_of(parsed(BUTTONS).message)
    record = SentRecord("c", "loja", TO, "buttons", 12.5, options, "echo")
    assert kind == "button"
    assert SentRecord.decode(record.encode()) == record


def test_offer_round_trips() -> None:
    offer = Offer("c", "loja", "MSG1", TO, "list", 99.0, (Option("a", "A", 1),))
    assert Offer.decode(offer.encode()) == offer


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"command_id": "c"}', b'{"command_id": "c", "channel_id": "x",'
                                 b' "recipient": "1", "kind": "text", "sent_at": "yesterday"}'])
def test_unreadable_records_are_refused_and_read_as_absent(raw: bytes) -> None:
    with pytest.raises(RecordError):
        SentRecord.decode(raw)
    assert decode_or_none(SentRecord.decode, raw) is None


def test_keys_are_per_instance() -> None:
    assert correlation.sent_key("inst", "M1") == "apiplus:loop:sent:inst:M1"
    assert correlation.offer_key("inst", TO) == f"apiplus:loop:offer:inst:{TO}"
    assert correlation.receipt_key("c", "read") == "apiplus:loop:receipt:c:read"


def test_options_are_numbered_as_the_plain_text_numbers_them() -> None:
    message = parsed(LIST).message
    _, options = options_of(message)
    text = degrade(message)["body"]
    for option in options:
        assert re.search(rf"^{option.number}\. {re.escape(option.title)}", text, re.MULTILINE)
    assert [o.id for o in options] == ["cafe", "cha", "bolo"]


def test_options_of_kinds_without_choices_are_empty() -> None:
    assert options_of({"kind": "text", "body": "x"}) == (None, ())


# --- receipts ----------------------------------------------------------------------------------------
def test_receipt_status_maps_played_to_read_and_ignores_pending() -> None:
    assert [receipt_status(s) for s in ("delivered", "read", "played", "failed", "sent", "pending", None)] == \
        ["delivered", "read", "read", "failed", None, None, None]


def test_read_without_delivered_emits_both_in_order() -> None:
    assert plan("read", {}, "t:0:5") == ["delivered", "read"]


def test_late_delivered_after_read_is_not_emitted() -> None:
    assert plan("delivered", {"delivered": "t:0:1", "read": "t:0:1"}, "t:0:9") == []


def test_delivered_then_read_each_once() -> None:
    assert plan("read", {"delivered": "t:0:1"}, "t:0:2") == ["read"]
    assert plan("read", {"delivered": "t:0:1", "read": "t:0:2"}, "t:0:3") == []


def test_retry_of_the_same_record_emits_again() -> None:
    """Markers pointing at this very record: its transaction aborted, the output must be produced again."""
    assert plan("read", {"delivered": "t:0:5", "read": "t:0:5"}, "t:0:5") == ["delivered", "read"]


def test_marker_from_a_later_record_of_the_partition_was_aborted_and_does_not_count() -> None:
    assert plan("delivered", {"read": "t:0:9"}, "t:0:3") == ["delivered"]
    assert plan("delivered", {"read": "t:1:9"}, "t:0:3") == []  # another partition: it stands


def test_failed_only_before_any_delivery() -> None:
    assert plan("failed", {}, "p") == ["failed"]
    assert plan("failed", {"delivered": "q"}, "p") == []
    assert plan("failed", {"failed": "q"}, "p") == []
    assert plan("read", {"failed": "q"}, "p") == ["delivered", "read"]


def test_plan_refuses_a_non_receipt() -> None:
    with pytest.raises(ValueError, match="not a receipt"):
        plan("sent", {}, "p")


def _status(position: str, status: str, command_id: str = "cmd-1", error: dict[str, Any] | None = None) -> StatusInput:
    return StatusInput(position, "MSG1", status, "2026-11-27T09:00:00Z", sent(command_id), error)


def test_batch_emits_each_status_once_with_deterministic_ids() -> None:
    batch = [_status("t:0:1", "delivered"), _status("t:0:2", "delivered"), _status("t:0:3", "read"),
             _status("t:0:4", "played"), _status("t:0:5", "delivered")]
    batch = [StatusInput(s.position, s.provider_message_id, receipt_status(s.status) or "", s.occurred_at, s.sent)
             for s in batch]
    out = process(batch, {})
    assert [e.event["status"] for e in out] == ["delivered", "read"]
    assert [e.marker for e in out] == [("cmd-1", "delivered"), ("cmd-1", "read")]
    again = process(batch, {("cmd-1", "delivered"): "t:0:1", ("cmd-1", "read"): "t:0:3"})
    assert [e.event["event_id"] for e in again] == [e.event["event_id"] for e in out]  # a retry: same events
    assert process(batch[1:], {("cmd-1", "delivered"): "t:0:1", ("cmd-1", "read"): "t:0:3"}) == \
        [e for e in out if e.event["status"] == "read"]


@given(st.lists(st.sampled_from(["delivered", "read", "failed"]), min_size=1, max_size=12))
def test_receipts_are_monotone_and_at_most_once(statuses: list[str]) -> None:
    batch = [_status(f"t:0:{i}", s) for i, s in enumerate(statuses)]
    emitted = [e.event["status"] for e in process(batch, {})]
    assert len(emitted) == len(set(emitted))
    if "read" in emitted:
        assert emitted.index("delivered") < emitted.index("read")
    if "failed" in emitted:
        assert emitted[0] == "failed"
    # split anywhere into two batches with the markers in between: the same result
    for cut in range(len(batch)):
        first = process(batch[:cut], {})
        markers = {e.marker: e.position for e in first}
        assert [e.event["status"] for e in first + process(batch[cut:], markers)] == emitted
        # and a retry of the second part after an abort that had set its markers: the same again
        second = process(batch[cut:], markers)
        aborted = {**markers, **{e.marker: e.position for e in second}}
        assert process(batch[cut:], aborted) == second


def test_delivery_events_validate_against_the_schema() -> None:
    for status, error in (("delivered", None), ("read", None), ("failed", {"code": 131026, "title": "Undeliverable"})):
        event = receipts.delivery_event(sent(), "MSG1", status, "2026-11-27T09:00:00Z", error)
        validate("dispatch.delivery", event)
        assert event["type"] == "dispatch.delivery"
    failed = receipts.delivery_event(sent(), "MSG1", "failed", "2026-11-27T09:00:00Z", None)
    assert failed["error"]["code"] == "provider_failed"
    assert receipts.delivery_event(sent(), "M", "failed", "2026-11-27T09:00:00Z",
                                   {"code": 131026, "title": "x"})["error"] == {"code": "131026", "message": "x"}


def test_one_command_does_not_mask_another() -> None:
    out = process([_status("a", "read", "c1"), _status("b", "read", "c2")], {})
    assert [(e.event["command_id"], e.event["status"]) for e in out] == \
        [("c1", "delivered"), ("c1", "read"), ("c2", "delivered"), ("c2", "read")]


# --- dispatch remembers ------------------------------------------------------------------------------
def test_degraded_buttons_write_the_sent_map_and_the_offer() -> None:
    command = parsed(BUTTONS)
    writes = loop.remember(command, channel("plain"), "MSG1", 100.0, sent_ttl=604800, offer_window=86400).writes
    keys = [k for k, _, _ in writes]
    assert keys == ["apiplus:loop:sent:inst-1:MSG1", f"apiplus:loop:offer:inst-1:{TO}"]
    offer = Offer.decode(writes[1][1])
    assert (offer.kind, offer.command_id, offer.provider_message_id) == ("button", "cmd-1", "MSG1")
    assert [(o.number, o.id) for o in offer.options] == [(1, "yes"), (2, "no")]
    assert [ttl for _, _, ttl in writes] == [604800, 86400]


def test_plus_channel_writes_no_offer() -> None:
    writes = loop.remember(parsed(BUTTONS), channel("plus"), "MSG1", 1.0, sent_ttl=60, offer_window=60).writes
    assert [k for k, _, _ in writes] == ["apiplus:loop:sent:inst-1:MSG1"]


def test_degraded_link_replaces_the_offer_with_nothing_to_answer() -> None:
    cta = {"kind": "cta_url", "body": "Veja", "display_text": "Abrir", "url": "https://x.example"}
    writes = loop.remember(parsed(cta), channel("plain"), "MSG2", 1.0, sent_ttl=60, offer_window=60).writes
    offer = Offer.decode(writes[1][1])
    assert (offer.kind, offer.options) == (None, ())


# --- echoes ------------------------------------------------------------------------------------------
def _echo_event(text: str | None, to: str = TO, by_api: bool | None = True, msg_id: str = "E1") -> dict[str, Any]:
    return {"type": "message.sent", "channel_id": "inst-1", "occurred_at": "2026-11-27T09:00:00Z",
            "message": {"id": msg_id, "to": to, "kind": "text", "text": text, "by_api": by_api}}


def test_echo_of_degraded_text_matches_the_command() -> None:
    command = parsed(BUTTONS)
    text = degrade(command.message)["body"]
    stored = loop.echo_of(_echo_event(text.replace("\n", "\r\n") + "  "))
    assert stored is not None
    assert stored[0] in loop.echo_keys(command, channel("plain"))


def test_echo_of_a_plus_menu_matches_body_or_bold_header_layout() -> None:
    command = parsed(BUTTONS)
    keys = loop.echo_keys(command, channel("plus"))
    for text in ("Confirma o pedido #1001?", "*Pedido #1001*\nConfirma o pedido #1001?"):
        stored = loop.echo_of(_echo_event(text))
        assert stored is not None
        assert stored[0] in keys


@pytest.mark.parametrize("event", [
    _echo_event("Confirma o pedido #1001?", by_api=False),  # sent from the phone
    _echo_event(None),  # a gateway that does not echo the text
    _echo_event("Confirma o pedido #1001?", to=""),
    {"type": "message.received", "channel_id": "x", "message": {}},
])
def test_echoes_that_cannot_be_a_command_are_not_stored(event: dict[str, Any]) -> None:
    assert loop.echo_of(event) is None


def test_other_content_or_recipient_does_not_match() -> None:
    keys = loop.echo_keys(parsed(BUTTONS), channel("plus"))
    for event in (_echo_event("confirma o pedido #1001?"), _echo_event("Confirma o pedido #1001?", to="5511000000000")):
        stored = loop.echo_of(event)
        assert stored is not None
        assert stored[0] not in keys


def test_pick_echo_takes_the_earliest_unclaimed_in_the_window() -> None:
    echoes = [Echo("late", 1000.0 + 400), Echo("b", 1000.0 + 5), Echo("a", 1000.0 + 2), Echo("old", 100.0)]
    assert pick_echo(echoes, 1000.0, 300, skew_seconds=10) == Echo("a", 1002.0)
    assert pick_echo(echoes, 1000.0, 300, skew_seconds=10, claimed=["a"]) == Echo("b", 1005.0)
    assert pick_echo(echoes, 1000.0, 300, skew_seconds=10, claimed=["a", "b"]) is None


def test_fingerprint_keeps_case_and_needs_text() -> None:
    assert fingerprint("Olá  mundo\n") == fingerprint("Olá mundo")
    assert fingerprint("olá mundo") != fingerprint("Olá mundo")
    assert fingerprint("   ") is None


# --- replies and typed answers ---------------------------------------------------------------------
def received(text: str | None = None, kind: str = "text", quoted: str | None = None, sender: str = TO,
             occurred_at: str = "2026-11-27T10:00:00Z", reply: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"id": "IN1", "from": sender, "kind": kind, "text": text}
    if quoted:
        message["context"] = {"provider_message_id": quoted}
    if reply:
        message["reply"] = reply
    return {"event_id": "e1", "type": "message.received", "schema_version": 1, "occurred_at": occurred_at,
            "producer": "apiplus-ingest", "channel_id": "inst-1", "source": "uazapi", "message": message}


OFFERED_AT = 1795773600.0 - 600  # ten minutes before 2026-11-27T10:00Z


def offer(kind: str = "button", message: dict[str, Any] = BUTTONS) -> Offer:
    _, options = options_of(parsed(message).message)
    return Offer("cmd-1", "loja", "MSG1", TO, kind, OFFERED_AT, options)


def test_button_reply_quoting_a_sent_message_carries_in_reply_to() -> None:
    event = received("Confirmar", kind="button_reply", quoted="MSG1", reply={"id": "yes", "title": "Confirmar"})
    assert lookups(event).sent == "apiplus:loop:sent:inst-1:MSG1"
    out = correlate(event, sent(), None, 86400)
    assert out.correlated
    assert not out.typed
    assert out.event["message"]["in_reply_to"] == {"command_id": "cmd-1", "provider_message_id": "MSG1"}
    assert out.event["message"]["reply"] == {"id": "yes", "title": "Confirmar"}
    validate("message.received", out.event)
    assert "in_reply_to" not in event["message"]  # the input is not changed


def test_quote_of_a_message_dispatch_did_not_send_is_left_alone() -> None:
    event = received("oi", quoted="OTHER")
    out = correlate(event, None, None, 86400)
    assert out.event is event
    assert not out.correlated


@pytest.mark.parametrize(("typed", "expected"), [("2", "no"), (" 2 ", "no"), ("Cancelar", "no"), ("cancelar", "no"),
                                                 ("CONFIRMAR", "yes"), ("1", "yes")])
def test_typed_number_or_title_becomes_a_button_reply(typed: str, expected: str) -> None:
    event = received(typed)
    assert lookups(event).offer == f"apiplus:loop:offer:inst-1:{TO}"
    out = correlate(event, None, offer(), 86400)
    assert out.typed
    assert out.correlated
    message = out.event["message"]
    assert message["kind"] == "button_reply"
    assert message["reply"]["id"] == expected
    assert message["reply"]["via"] == "typed"
    assert message["in_reply_to"] == {"command_id": "cmd-1", "provider_message_id": "MSG1"}
    validate("message.received", out.event)


def test_list_titles_match_without_accents_or_case() -> None:
    out = correlate(received("bolo de maca"), None, offer("list", LIST), 86400)
    assert out.event["message"]["kind"] == "list_reply"
    assert out.event["message"]["reply"] == {"id": "bolo", "title": "Bolo de Maçã", "via": "typed"}
    assert correlate(received("3"), None, offer("list", LIST), 86400).event["message"]["reply"]["id"] == "bolo"


@pytest.mark.parametrize("typed", ["7", "0", "2.", "02x", "Confirmar agora", "sim", "", "²"])
def test_anything_else_stays_text(typed: str) -> None:
    event = received(typed)
    out = correlate(event, None, offer(), 86400)
    assert not out.typed
    assert out.event["message"]["kind"] == "text"


def test_offer_outside_the_window_or_to_someone_else_is_not_answerable() -> None:
    assert not correlate(received("2", occurred_at="2026-11-28T10:00:00Z"), None, offer(), 86400).typed
    assert not correlate(received("2", sender="5511000000000"), None, offer(), 86400).typed
    assert not correlate(received("2"), None, offer(), 60).typed


def test_quoting_an_older_message_is_not_a_typed_answer_to_the_latest() -> None:
    older = SentRecord("cmd-0", "loja", TO, "buttons", OFFERED_AT - 100)
    out = correlate(received("2", quoted="MSG0"), older, offer(), 86400)
    assert not out.typed
    assert out.event["message"]["in_reply_to"]["command_id"] == "cmd-0"
    assert correlate(received("2", quoted="MSG1"), sent(), offer(), 86400).typed


def test_ambiguous_titles_answer_nothing() -> None:
    options = (Option("a", "Sim", 1), Option("b", "sím", 2))
    assert answer("sim", options) is None
    assert answer("2", options) == Option("b", "sím", 2)


def test_offer_without_choices_answers_nothing() -> None:
    empty = Offer("cmd-1", "loja", "MSG1", TO, None, OFFERED_AT, ())
    assert not correlate(received("1"), None, empty, 86400).typed


def test_non_text_and_other_types_need_no_offer_lookup() -> None:
    assert lookups(received(kind="image")).offer is None
    assert lookups({"type": "message.status", "channel_id": "x"}) == replies.Lookups(None, None)


@given(st.text(max_size=30))
def test_fold_is_idempotent_and_case_insensitive(text: str) -> None:
    assert fold(fold(text)) == fold(text)
    assert fold(text.upper()) == fold(fold(text).upper())
