"""Gateway behaviours the real-traffic corpus does not hold a sample of, from each gateway's docs and source."""

from __future__ import annotations

from typing import Any

import pytest

from apiplus.errors import ErrorCode, PermanentError
from apiplus.schemas import validate
from services.ingest.core import Context, Outcome, normalize

NOW = Context(received_at_ms=1767225600000)  # 2026-01-01T00:00:00Z


def run(payload: dict[str, Any], ctx: Context = NOW) -> Outcome:
    outcome = normalize(payload, ctx)
    for event in outcome.events:
        validate(event["type"], event)
    return outcome


def only(payload: dict[str, Any], ctx: Context = NOW) -> dict[str, Any]:
    outcome = run(payload, ctx)
    assert (len(outcome.events), outcome.ignored, outcome.errors) == (1, [], []), outcome
    return outcome.events[0]


def evo(event: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"event": event, "instance": "evo1", "data": data, "date_time": "2023-11-24T11:19:50.442Z",
            "apikey": "k", **extra}


KEY = {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False, "id": "NEW1"}


# --- Evolution: time ------------------------------------------------------------------------------
@pytest.mark.parametrize(("clock", "extra", "expected"), [
    ("receipt", {}, "2026-01-01T00:00:00Z"),  # date_time distrusted: the record's time
    ("utc", {}, "2023-11-24T11:19:50.442Z"),  # a server that runs in UTC
    ("America/Sao_Paulo", {}, "2023-11-24T14:19:50.442Z"),  # wall-clock in the server's zone
    ("receipt", {"timestamp": 1700835590442}, "2023-11-24T14:19:50.442Z"),  # the Kafka envelope's Date.now()
])
def test_evolution_envelope_time_follows_the_configured_clock(clock: str, extra: dict[str, Any], expected: str) -> None:
    event = only(evo("connection.update", {"instance": "evo1", "state": "open", "statusReason": 200}, **extra),
                 Context(received_at_ms=1767225600000, evolution_clock=clock))
    assert event["occurred_at"] == expected


def test_evolution_connection_id_does_not_depend_on_when_it_was_received() -> None:
    payload = evo("connection.update", {"instance": "evo1", "state": "close", "statusReason": 428})
    assert only(payload)["event_id"] == only(payload, Context(received_at_ms=1767229200000))["event_id"]


# --- Evolution: statuses, edits, deletions --------------------------------------------------------
@pytest.mark.parametrize(("raw", "state"), [("SERVER_ACK", "sent"), ("DELIVERY_ACK", "delivered"), ("READ", "read"),
                                            ("PLAYED", "played"), ("ERROR", "failed"), (3, "delivered")])
def test_evolution_statuses(raw: Any, state: str) -> None:
    event = only(evo("messages.update", {"keyId": "OUT1", "remoteJid": "5511977776666@s.whatsapp.net",
                                         "fromMe": True, "status": raw, "messageId": "cuid-not-the-id"}))
    assert event["status"]["message_id"] == "OUT1"
    assert event["status"]["state"] == state


def test_evolution_revoke_and_edit_inside_an_upsert() -> None:
    revoke = only(evo("messages.upsert", {"key": KEY, "messageTimestamp": 1700835590, "message": {
        "protocolMessage": {"key": {**KEY, "id": "ORIG"}, "type": "REVOKE"}}}))
    assert (revoke["type"], revoke["message"]["id"], revoke["message"]["delete_id"]) == ("message.deleted", "ORIG",
                                                                                         "NEW1")
    assert revoke["message"]["from"] == "5511977776666"
    edit = only(evo("messages.upsert", {"key": KEY, "messageTimestamp": 1700835590, "message": {"editedMessage": {
        "message": {"protocolMessage": {"key": {**KEY, "id": "ORIG"}, "type": 14, "timestampMs": "1700835599000",
                                        "editedMessage": {"conversation": "corrigido"}}}}}}))
    assert edit["type"] == "message.edited"
    assert (edit["message"]["id"], edit["message"]["text"], edit["occurred_at"]) == ("ORIG", "corrigido",
                                                                                     "2023-11-24T14:19:59Z")


def test_evolution_messages_edited_delete_and_api_edit_events() -> None:
    edited = only(evo("messages.edited", {"key": {**KEY, "id": "ORIG"}, "type": "MESSAGE_EDIT",
                                          "editedMessage": {"conversation": "novo"}}))
    assert (edited["type"], edited["message"]["from_me"], edited["message"]["text"]) == ("message.edited", False,
                                                                                         "novo")
    ours = only(evo("send.message.update", {"key": {**KEY, "fromMe": True, "id": "OURS"}, "type": 14,
                                            "editedMessage": {"conversation": "x"}}))
    assert (ours["message"]["from_me"], ours["message"]["to"]) == (True, "5511977776666")
    deleted = only(evo("messages.delete", {**KEY, "id": "GONE"}))
    assert (deleted["type"], deleted["message"]["id"]) == ("message.deleted", "GONE")
    api_deleted = only(evo("messages.delete", {"id": "cuid", "key": {**KEY, "fromMe": True, "id": "GONE2"},
                                               "status": "DELETED", "messageTimestamp": 1}))
    assert (api_deleted["message"]["id"], api_deleted["message"]["from_me"]) == ("GONE2", True)


def test_evolution_send_message_is_an_echo_sent_by_the_api() -> None:
    event = only(evo("send.message", {"key": {**KEY, "fromMe": True}, "messageTimestamp": 1700835590,
                                      "message": {"conversation": "enviado"}, "status": "PENDING"}))
    assert (event["type"], event["message"]["by_api"], event["message"]["to"]) == ("message.sent", True,
                                                                                   "5511977776666")


def test_evolution_known_events_are_ignored_and_unknown_ones_refused() -> None:
    assert [i.reason for i in run(evo("chats.upsert", [])).ignored] == ["chats"]
    assert [i.reason for i in run(evo("GROUP_PARTICIPANTS_UPDATE", {})).ignored] == ["groups"]
    assert [i.reason for i in run(evo("messages.set", [])).ignored] == ["history_sync"]
    with pytest.raises(PermanentError) as err:
        run(evo("brand.new.event", {}))
    assert err.value.code == ErrorCode.UNKNOWN_EVENT


# --- Cloud API ------------------------------------------------------------------------------------
def cloud(field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": field, "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "PN"}, **value}}]}]}


def test_cloud_revoke_and_business_app_echoes() -> None:
    revoke = only(cloud("messages", {"messages": [{"from": "5511988887777", "id": "wamid.R", "timestamp": "1697043223",
                                                   "type": "revoke", "revoke": {"original_message_id": "wamid.O"}}]}))
    assert (revoke["type"], revoke["message"]["id"], revoke["message"]["from"]) == ("message.deleted", "wamid.O",
                                                                                    "5511988887777")
    echo = only(cloud("smb_message_echoes", {"message_echoes": [
        {"from": "15550001111", "to": "5511988887777", "id": "wamid.E", "timestamp": "1697043223", "type": "text",
         "text": {"body": "do app"}}]}))
    assert echo["type"] == "message.sent"
    assert {k: echo["message"][k] for k in ("id", "to", "kind", "text", "by_api")} == {
        "id": "wamid.E", "to": "5511988887777", "kind": "text", "text": "do app", "by_api": False}


def test_cloud_one_odd_item_does_not_refuse_the_others() -> None:
    outcome = run(cloud("messages", {
        "messages": [{"from": "5511988887777", "id": "wamid.1", "timestamp": "1697043223", "type": "text",
                      "text": {"body": "ok"}},
                     {"from": "5511988887777", "id": "wamid.2", "timestamp": "later", "type": "text",
                      "text": {"body": "bad time"}}],
        "statuses": [{"id": "wamid.3", "status": "played", "timestamp": "1697043224", "recipient_id": "5511"}]}))
    assert [e["type"] for e in outcome.events] == ["message.received", "message.status"]
    assert [(e.code, e.field) for e in outcome.errors] == [
        (ErrorCode.INVALID_VALUE, "entry[0].changes[0].value.messages[1].timestamp")]
    assert outcome.refusal() is outcome.errors[0]


# --- uazapi ---------------------------------------------------------------------------------------
def uaz(event_type: str, **body: Any) -> dict[str, Any]:
    return {"EventType": event_type, "instanceName": "uz1", "owner": "5511", "token": "t", **body}


def test_uazapi_sent_by_the_api_and_receipts_of_our_reads_and_deletions() -> None:
    sent = only(uaz("messages", message={"messageid": "M1", "chatid": "5511999999999@s.whatsapp.net", "fromMe": True,
                                         "wasSentByApi": True, "messageType": "Conversation", "text": "oi",
                                         "messageTimestamp": 1764234000000}))
    assert (sent["type"], sent["message"]["by_api"], sent["message"]["to"]) == ("message.sent", True, "5511999999999")
    read_self = only(uaz("messages_update", type="ReadReceipt", state="read-self", event={
        "MessageIDs": ["IN1"], "Chat": "5511999999999@s.whatsapp.net", "IsFromMe": True, "Timestamp": 1764234000}))
    assert (read_self["status"]["state"], read_self["status"]["from_me"]) == ("read", False)
    deleted = only(uaz("messages_update", state="Deleted", event={
        "MessageIDs": ["IN2"], "Chat": "5511999999999@s.whatsapp.net", "IsFromMe": "False"}))
    assert (deleted["type"], deleted["message"]["id"], deleted["occurred_at"]) == ("message.deleted", "IN2",
                                                                                   "2026-01-01T00:00:00Z")


def test_uazapi_reply_title_comes_from_vote_when_text_is_empty() -> None:
    event = only(uaz("messages", message={"messageid": "M2", "chatid": "5511999999999@s.whatsapp.net",
                                          "fromMe": False, "messageType": "ListResponseMessage", "text": "",
                                          "vote": "Boleto", "buttonOrListid": "row-2",
                                          "messageTimestamp": 1764234000000}))
    assert event["message"]["reply"]["title"] == "Boleto"
    assert event["message"]["text"] == "Boleto"


def test_uazapi_unknown_event_type_is_refused_and_presence_ignored() -> None:
    assert [i.reason for i in run(uaz("presence", event={})).ignored] == ["presence"]
    with pytest.raises(PermanentError) as err:
        run(uaz("somethingnew"))
    assert err.value.code == ErrorCode.UNKNOWN_EVENT


def test_uazapi_receipts_that_say_nothing_about_delivery_are_ignored() -> None:
    outcome = run(uaz("messages_update", state="inactive", event={"MessageIDs": ["X"], "Chat": "5511@s.whatsapp.net"}))
    assert (outcome.events, [i.reason for i in outcome.ignored]) == ([], ["protocol"])
