"""Normalising each gateway dialect, from the documented payload shapes (real traffic: test_ingest_corpus.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiplus.decode import parse_object
from apiplus.errors import ErrorCode, PermanentError
from apiplus.schemas import validate
from services.ingest.core import Context, Outcome, detect_dialect, digits_of
from services.ingest.core import normalize as normalize_outcome

SECRET = "S3CR3T-apikey-0123456789"


def cloud(messages: list[dict[str, Any]] | None = None, statuses: list[dict[str, Any]] | None = None,
          phone_number_id: str | None = "PN1") -> dict[str, Any]:
    metadata = {"display_phone_number": "15550001111"}
    if phone_number_id is not None:
        metadata["phone_number_id"] = phone_number_id
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": metadata,
                             "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5511988887777"}]}
    if messages is not None:
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    return {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages",
                                                                                     "value": value}]}]}


def cloud_msg(kind: str, body: dict[str, Any], msg_id: str = "wamid.1") -> dict[str, Any]:
    return {"from": "5511988887777", "id": msg_id, "timestamp": "1764234000", "type": kind, **body}


def evolution(event: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"event": event, "instance": "evo1", "data": data, "date_time": "2026-11-27T09:00:00.000Z",
            "sender": "5511000000000@s.whatsapp.net", "server_url": "http://evo", "apikey": SECRET, **extra}


def evo_upsert(message: dict[str, Any], from_me: bool = False, msg_id: str = "E1") -> dict[str, Any]:
    return evolution("messages.upsert", {"key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": from_me,
                                                 "id": msg_id},
                                         "pushName": "Bia", "message": message, "messageType": "x",
                                         "messageTimestamp": 1764234000})


def uazapi(event_type: str, **body: Any) -> dict[str, Any]:
    return {"EventType": event_type, "BaseUrl": "https://x.uazapi.com", "instanceName": "uz1", "owner": "5511",
            "token": SECRET, **body}


NOW = Context(received_at_ms=1764234000000)


def normalize(payload: dict[str, Any], ctx: Context = NOW) -> list[dict[str, Any]]:
    """The events of a payload that yields no ignores and no errors."""
    outcome = normalize_outcome(payload, ctx)
    assert not outcome.errors, outcome.errors
    assert not outcome.ignored, outcome.ignored
    return outcome.events


def one(payload: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    events = normalize(payload, ctx or NOW)
    assert len(events) == 1
    validate(events[0]["type"], events[0])
    return events[0]


# --- Cloud API -----------------------------------------------------------------------------------
def test_cloud_text_message() -> None:
    event = one(cloud([cloud_msg("text", {"text": {"body": "oi"}})]))
    assert event["channel_id"] == "PN1"
    assert event["source"] == "cloudapi"
    assert event["message"] == {"id": "wamid.1", "from": "5511988887777", "kind": "text", "text": "oi",
                                "push_name": "Ana"}
    assert event["occurred_at"] == "2025-11-27T09:00:00Z"  # epoch seconds


@pytest.mark.parametrize("itype", ["button_reply", "list_reply"])
def test_cloud_interactive_replies(itype: str) -> None:
    reply = {"id": "opt-2", "title": "Boleto", **({"description": "d"} if itype == "list_reply" else {})}
    event = one(cloud([cloud_msg("interactive", {"interactive": {"type": itype, itype: reply}})]))
    assert event["message"]["kind"] == itype
    assert event["message"]["reply"]["id"] == "opt-2"
    assert event["message"]["reply"]["title"] == "Boleto"


def test_cloud_location_and_media() -> None:
    loc = one(cloud([cloud_msg("location", {"location": {"latitude": -23.5, "longitude": -46.6, "name": "Casa"}})]))
    assert loc["message"]["location"] == {"latitude": -23.5, "longitude": -46.6, "name": "Casa", "address": None}
    img = one(cloud([cloud_msg("image", {"image": {"id": "m1", "caption": "foto"}})]))
    assert (img["message"]["kind"], img["message"]["text"]) == ("image", "foto")
    other = one(cloud([cloud_msg("payment_link", {"payment_link": {}})]))
    assert other["message"]["kind"] == "unknown"


def test_cloud_body_with_several_messages_and_statuses() -> None:
    texts = [cloud_msg("text", {"text": {"body": "a"}}, "w1"), cloud_msg("text", {"text": {"body": "b"}}, "w2")]
    payload = cloud(texts,
                    [{"id": "out1", "status": "failed", "timestamp": "1764234001", "recipient_id": "5511988887777",
                      "errors": [{"code": 131047, "title": "Re-engagement message"}]}])
    events = normalize(payload)
    assert [e["type"] for e in events] == ["message.received", "message.received", "message.status"]
    assert events[2]["status"]["state"] == "failed"
    assert events[2]["status"]["error"]["code"] == 131047
    assert len({e["event_id"] for e in events}) == 3


def test_cloud_without_phone_number_id_refuses_that_change() -> None:
    outcome = normalize_outcome(cloud([cloud_msg("text", {"text": {"body": "oi"}})], phone_number_id=None))
    assert outcome.events == []
    [error] = outcome.errors
    assert error.code == ErrorCode.MISSING_FIELD
    assert error.field == "entry[0].changes[0].value.metadata.phone_number_id"


def test_cloud_wrong_type_names_the_field() -> None:
    payload = cloud([{**cloud_msg("text", {"text": {"body": "oi"}}), "timestamp": ["x"]}])
    [error] = normalize_outcome(payload).errors
    assert error.code == ErrorCode.WRONG_TYPE
    assert error.field == "entry[0].changes[0].value.messages[0].timestamp"


# --- Evolution -----------------------------------------------------------------------------------
def test_evolution_text_and_digits_only_sender() -> None:
    event = one(evo_upsert({"conversation": "olá"}))
    assert event["channel_id"] == "evo1"
    assert event["source"] == "evolution"
    assert event["message"]["from"] == "5511977776666"
    assert event["occurred_at"] == "2025-11-27T09:00:00Z"  # messageTimestamp in seconds


def test_evolution_buttons_list_and_location_replies() -> None:
    b = one(evo_upsert({"buttonsResponseMessage": {"selectedButtonId": "yes", "selectedDisplayText": "Sim"}}))
    assert (b["message"]["kind"], b["message"]["reply"]) == ("button_reply", {"id": "yes", "title": "Sim"})
    lr = one(evo_upsert({"listResponseMessage": {"title": "Pix", "singleSelectReply": {"selectedRowId": "r1"}}}))
    assert (lr["message"]["kind"], lr["message"]["reply"]["id"]) == ("list_reply", "r1")
    loc = one(evo_upsert({"locationMessage": {"degreesLatitude": 1.5, "degreesLongitude": 2.5}}))
    assert loc["message"]["location"]["latitude"] == 1.5


def test_evolution_own_message_is_an_echo() -> None:
    event = one(evo_upsert({"conversation": "enviado"}, from_me=True))
    assert event["type"] == "message.sent"
    assert event["message"]["to"] == "5511977776666"


@pytest.mark.parametrize(("code", "state", "reason"), [(401, "logged_out", "logged_out"),
                                                       (515, "closed", "restart_required"),
                                                       (440, "closed", "connection_replaced"),
                                                       (408, "closed", "timed_out")])
def test_evolution_close_codes(code: int, state: str, reason: str) -> None:
    event = one(evolution("connection.update", {"instance": "evo1", "state": "close", "statusReason": code}))
    assert event["connection"] == {"state": state, "code": code, "reason": reason}


@pytest.mark.parametrize("code", [1e23, -1, 2**31, float("inf")])
def test_an_evolution_close_code_no_status_code_can_be_is_refused_not_written(code: float) -> None:
    """orjson reads 100000000000000000000000 as the float 1e23, whose int no JSON encoder here can write: an
    event carrying it failed when it was encoded (found by the offline corpus' property test)."""
    with pytest.raises(PermanentError) as err:
        normalize(evolution("connection.update", {"instance": "evo1", "state": "close", "statusReason": code}))
    assert err.value.field == "data.statusReason"


def test_a_uazapi_disconnect_reason_too_large_for_a_code_is_left_out() -> None:
    conn = one(uazapi("connection", instance={"status": "disconnected",
                                              "lastDisconnectReason": "100000000000000000000000: odd"}),
               Context(received_at_ms=1764234000000))
    assert conn["connection"]["code"] is None
    orjson.dumps(conn)


def test_evolution_status_update_and_logout_and_qr() -> None:
    status = one(evolution("messages.update", {"keyId": "K1", "remoteJid": "5511@s.whatsapp.net",
                                               "status": "DELIVERY_ACK"}))
    assert status["status"] == {"message_id": "K1", "state": "delivered", "recipient": "5511", "from_me": False}
    logout = one(evolution("logout.instance", {}))
    assert logout["connection"]["state"] == "logged_out"
    assert logout["connection"]["code"] == 401
    qr = one(evolution("QRCODE_UPDATED", {"qrcode": {"code": "2@secret-pairing", "base64": "AAA"}}))
    assert qr["type"] == "qr.updated"
    assert "2@secret-pairing" not in orjson.dumps(qr).decode()


def test_evolution_without_instance_is_refused() -> None:
    payload = evolution("connection.update", {"state": "open"})
    del payload["instance"]
    with pytest.raises(PermanentError) as err:
        normalize(payload)
    assert (err.value.code, err.value.field) == (ErrorCode.MISSING_FIELD, "instance")


def test_evolution_presence_is_ignored_with_a_reason_not_refused() -> None:
    outcome = normalize_outcome(evolution("presence.update", {"id": "x"}))
    assert (outcome.events, outcome.errors) == ([], [])
    assert [(i.reason, i.detail) for i in outcome.ignored] == [("presence", "presence.update")]


# --- uazapi --------------------------------------------------------------------------------------
def test_uazapi_timestamps_are_milliseconds() -> None:
    event = one(uazapi("messages", message={"messageid": "m1", "chatid": "5511999999999@s.whatsapp.net",
                                            "sender_pn": "5511999999999@s.whatsapp.net", "fromMe": False,
                                            "messageType": "Conversation", "text": "oi",
                                            "messageTimestamp": 1764234000123}))
    assert event["occurred_at"] == "2025-11-27T09:00:00.123Z"


def test_uazapi_list_reply_and_logged_out_connection() -> None:
    lr = one(uazapi("messages", message={"messageid": "m2", "chatid": "5511@s.whatsapp.net", "fromMe": False,
                                         "messageType": "ListResponseMessage", "text": "Pix", "buttonOrListid": "r9",
                                         "messageTimestamp": 1764234000000}))
    assert lr["message"]["reply"] == {"id": "r9", "title": "Pix", "description": None}
    conn = one(uazapi("connection", instance={"status": "disconnected",
                                              "lastDisconnectReason": "401: logged out from another device"}),
               Context(received_at_ms=1764234000000))
    assert conn["connection"] == {"state": "logged_out", "code": 401, "reason": "logged_out"}
    assert conn["occurred_at"] == "2025-11-27T09:00:00Z"


def test_uazapi_connection_without_any_timestamp_takes_the_record_time_and_a_stable_id() -> None:
    payload = uazapi("connection", instance={"status": "connected"})
    first = one(payload, Context(received_at_ms=1764234000000))
    again = one(payload, Context(received_at_ms=1764234099000))  # the same webhook, delivered later
    assert first["occurred_at"] == "2025-11-27T09:00:00Z"
    assert first["event_id"] == again["event_id"]


# --- across dialects -----------------------------------------------------------------------------
def test_unknown_dialect_and_forced_dialect() -> None:
    with pytest.raises(PermanentError) as err:
        normalize({"hello": "world"})
    assert err.value.code == ErrorCode.UNKNOWN_DIALECT
    assert detect_dialect({"event": "x", "instance": "y"}) == "evolution"
    with pytest.raises(PermanentError):
        detect_dialect({}, forced="telegram")


def test_redelivered_payload_gives_the_same_ids() -> None:
    payload = evo_upsert({"conversation": "olá"})
    assert normalize(payload) == normalize(orjson.loads(orjson.dumps(payload)))


def test_different_messages_never_share_an_id() -> None:
    a = one(evo_upsert({"conversation": "same"}, msg_id="A"))
    b = one(evo_upsert({"conversation": "same"}, msg_id="B"))
    assert a["event_id"] != b["event_id"]


def test_digits_of_strips_jid_suffixes_and_devices() -> None:
    assert digits_of("5511999999999:12@s.whatsapp.net") == "5511999999999"
    assert digits_of("+55 (11) 99999-9999") == "5511999999999"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
gateway_keys = st.sampled_from(["object", "entry", "event", "instance", "data", "EventType", "instanceName",
                                "message", "apikey", "token", "date_time", "changes", "metadata"])


@given(st.dictionaries(gateway_keys, json_values, max_size=6), st.sampled_from([None, *["cloudapi", "evolution",
                                                                                        "uazapi"]]))
def test_arbitrary_json_never_crashes_never_vanishes_and_never_leaks_a_secret(payload: dict[str, Any],
                                                                             forced: str | None) -> None:
    payload = {**payload, "apikey": SECRET, "token": SECRET}
    try:
        outcome = normalize_outcome(payload, Context(dialect=forced, received_at_ms=1764234000000))
    except PermanentError as exc:
        assert exc.code in ErrorCode.__members__.values()
        assert SECRET not in exc.message
        return
    assert_accounted_for(outcome)
    for event in outcome.events:
        assert SECRET not in orjson.dumps(event).decode()
        validate(event["type"], event)
    assert all(SECRET not in e.message for e in outcome.errors)


def assert_accounted_for(outcome: Outcome) -> None:
    """Nothing vanishes: a record yields events, or says why not (an ignore or an error)."""
    assert outcome.events or outcome.ignored or outcome.errors, "a record yielded nothing and said nothing"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_with_a_specific_code(raw: bytes) -> None:
    try:
        payload = parse_object(raw)
    except PermanentError as exc:
        assert exc.code in (ErrorCode.INVALID_JSON, ErrorCode.INVALID_ENCODING, ErrorCode.NOT_AN_OBJECT)
        return
    with contextlib.suppress(PermanentError):
        normalize(payload)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(PermanentError) as err:
        parse_object(b'{"a":"' + b"x" * 2000 + b'"}', max_bytes=1024)
    assert err.value.code == ErrorCode.PAYLOAD_TOO_LARGE
