"""Normalising gateway payloads (Cloud API, Evolution API v2, uazapiGO) into canonical events. Pure.

Outputs are built field by field from what each gateway documents, never copied wholesale, so a
secret riding in an envelope (Evolution `apikey`, uazapi `token`) cannot reach a canonical event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apiplus.envelope import deterministic_id, make_event, parse_rfc3339, rfc3339, rfc3339_from_epoch
from apiplus.errors import ErrorCode, PermanentError

PRODUCER = "apiplus-ingest"
DIALECTS = ("cloudapi", "evolution", "uazapi")

# Baileys / WhatsApp Web disconnect codes -> reason names (docs/facts.md#whatsapp-connection-codes-ingest).
DISCONNECT_REASONS = {
    401: "logged_out",
    402: "payment_required",
    403: "forbidden",
    406: "not_acceptable",
    408: "timed_out",
    411: "multidevice_mismatch",
    428: "connection_closed",
    440: "connection_replaced",
    500: "bad_session",
    503: "service_unavailable",
    515: "restart_required",
}
TERMINAL_CODES = frozenset({401})

Event = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What the shell knows about a raw record beyond its payload."""

    dialect: str | None = None  # forced by a header
    received_at_ms: int | None = None  # the Kafka record timestamp, for events without their own


# --- field access with specific errors -------------------------------------------------------------
def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} is required", field=path)
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        names = "/".join(t.__name__ for t in _as_tuple(kind))
        raise PermanentError(
            ErrorCode.WRONG_TYPE, f"{path} must be {names}, not {type(value).__name__}", field=path
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _text(obj: dict[str, Any], key: str, path: str, required: bool = True) -> str | None:
    value: str | None = _get(obj, key, str, path, required)
    if required and value == "":
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} must not be empty", field=path)
    return value


def _obj(obj: dict[str, Any], key: str, path: str, required: bool = True) -> dict[str, Any]:
    value: dict[str, Any] = _get(obj, key, dict, path, required) or {}
    return value


def _list(obj: dict[str, Any], key: str, path: str) -> list[Any]:
    value: list[Any] = _get(obj, key, list, path, required=False) or []
    return value


def _epoch(value: Any, path: str, per_second: int) -> str:
    """An epoch timestamp (`per_second` 1 for seconds, 1000 for milliseconds) as RFC 3339."""
    if isinstance(value, dict) and "low" in value:  # protobuf Long, as some Baileys builds serialise it
        value = (int(value.get("high") or 0) << 32) + (int(value["low"]) & 0xFFFFFFFF)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an epoch number", field=path)
    try:
        number = float(value)
    except ValueError:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not a number: {value!r}", field=path) from None
    seconds = number / per_second
    if not 0 < seconds < 32503680000:  # after 1970, before year 3000
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is out of range: {value!r}", field=path)
    return rfc3339_from_epoch(seconds)


def _iso(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an ISO 8601 string", field=path)
    try:
        return rfc3339(parse_rfc3339(value))
    except ValueError:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not an ISO 8601 timestamp", field=path) from None


def digits_of(jid: str) -> str:
    """`5511999999999@s.whatsapp.net` or `+55 11 99999-9999` -> `5511999999999`; device suffixes dropped."""
    user = jid.split("@", 1)[0].split(":", 1)[0]
    return "".join(ch for ch in user if ch.isdigit())


def _phone(value: str, path: str) -> str:
    digits = digits_of(value)
    if not digits:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} holds no phone digits", field=path)
    return digits[:20]


def _received_at(ctx: Context, path: str) -> str:
    if ctx.received_at_ms is None:
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} is required (no timestamp in the event)", field=path)
    return rfc3339_from_epoch(ctx.received_at_ms / 1000)


def _canonical(type_: str, source: str, channel_id: str, occurred_at: str, *id_parts: Any, **payload: Any) -> Event:
    return make_event(
        type_,
        event_id=deterministic_id(source, channel_id, type_, *id_parts),
        occurred_at=occurred_at,
        producer=PRODUCER,
        channel_id=channel_id,
        source=source,
        **payload,
    )


def connection(code: int | None, state: str) -> dict[str, Any]:
    """A connection block; a terminal code (401) always means logged out, whatever the gateway said."""
    if code in TERMINAL_CODES:
        state = "logged_out"
    reason = DISCONNECT_REASONS.get(code) if code is not None else None
    if reason is None and state == "logged_out":
        reason = "logged_out"
    return {"state": state, "code": code, "reason": reason}


# --- dialect detection -----------------------------------------------------------------------------
def detect_dialect(payload: dict[str, Any], forced: str | None = None) -> str:
    if forced is not None:
        if forced not in DIALECTS:
            raise PermanentError(ErrorCode.UNKNOWN_DIALECT, f"unknown dialect {forced!r} in header", field="dialect")
        return forced
    if payload.get("object") == "whatsapp_business_account" or ("entry" in payload and "object" in payload):
        return "cloudapi"
    if "EventType" in payload:
        return "uazapi"
    if "event" in payload and ("instance" in payload or "data" in payload):
        return "evolution"
    raise PermanentError(
        ErrorCode.UNKNOWN_DIALECT,
        "payload matches no gateway: expected a Cloud API webhook (object), an Evolution event "
        "(event, instance) or a uazapi webhook (EventType)",
    )


def normalize(payload: dict[str, Any], ctx: Context = Context()) -> list[Event]:
    """All canonical events in one raw payload; raises PermanentError with no partial result."""
    dialect = detect_dialect(payload, ctx.dialect)
    return _NORMALIZERS[dialect](payload, ctx)


# --- Meta WhatsApp Cloud API -----------------------------------------------------------------------
def _cloudapi(payload: dict[str, Any], ctx: Context) -> list[Event]:
    out: list[Event] = []
    entries = _get(payload, "entry", list, "entry")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PermanentError(ErrorCode.WRONG_TYPE, f"entry[{i}] must be an object", field=f"entry[{i}]")
        for j, change in enumerate(_list(entry, "changes", f"entry[{i}].changes")):
            path = f"entry[{i}].changes[{j}]"
            if not isinstance(change, dict):
                raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an object", field=path)
            if change.get("field") != "messages":
                continue  # account and template updates carry no channel events
            value = _obj(change, "value", f"{path}.value")
            metadata = _obj(value, "metadata", f"{path}.value.metadata")
            channel = _text(metadata, "phone_number_id", f"{path}.value.metadata.phone_number_id")
            assert channel is not None
            names = {
                c.get("wa_id"): (c.get("profile") or {}).get("name")
                for c in _list(value, "contacts", f"{path}.value.contacts")
                if isinstance(c, dict)
            }
            for k, msg in enumerate(_list(value, "messages", f"{path}.value.messages")):
                out.append(_cloud_message(channel, msg, names, f"{path}.value.messages[{k}]"))
            for k, status in enumerate(_list(value, "statuses", f"{path}.value.statuses")):
                out.append(_cloud_status(channel, status, f"{path}.value.statuses[{k}]"))
    return out


_CLOUD_MEDIA = {"image", "audio", "video", "document", "sticker"}


def _cloud_message(channel: str, msg: Any, names: dict[Any, Any], path: str) -> Event:
    if not isinstance(msg, dict):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an object", field=path)
    msg_id = _text(msg, "id", f"{path}.id")
    sender = _phone(_text(msg, "from", f"{path}.from") or "", f"{path}.from")
    occurred = _epoch(_get(msg, "timestamp", (str, int), f"{path}.timestamp"), f"{path}.timestamp", 1)
    kind_in = _text(msg, "type", f"{path}.type")
    message: dict[str, Any] = {"id": msg_id, "from": sender, "kind": "unknown", "text": None}
    if names.get(msg.get("from")):
        message["push_name"] = names[msg.get("from")]
    if kind_in == "text":
        message.update(kind="text", text=_text(_obj(msg, "text", f"{path}.text"), "body", f"{path}.text.body"))
    elif kind_in == "interactive":
        inter = _obj(msg, "interactive", f"{path}.interactive")
        itype = _text(inter, "type", f"{path}.interactive.type")
        if itype in ("button_reply", "list_reply"):
            reply = _obj(inter, itype, f"{path}.interactive.{itype}")
            message["kind"] = itype
            message["reply"] = {
                "id": _text(reply, "id", f"{path}.interactive.{itype}.id"),
                "title": _text(reply, "title", f"{path}.interactive.{itype}.title", required=False),
            }
            if itype == "list_reply":
                message["reply"]["description"] = _text(
                    reply, "description", f"{path}.interactive.{itype}.description", required=False
                )
            message["text"] = message["reply"]["title"]
    elif kind_in == "button":  # quick-reply button of a template
        button = _obj(msg, "button", f"{path}.button")
        title = _text(button, "text", f"{path}.button.text", required=False)
        message.update(kind="button_reply", text=title)
        message["reply"] = {"id": _text(button, "payload", f"{path}.button.payload"), "title": title}
    elif kind_in == "location":
        loc = _obj(msg, "location", f"{path}.location")
        message.update(kind="location", location=_location(loc, "latitude", "longitude", f"{path}.location"))
    elif kind_in in _CLOUD_MEDIA:
        media = _obj(msg, kind_in, f"{path}.{kind_in}", required=False)
        message.update(kind=kind_in, text=_text(media, "caption", f"{path}.{kind_in}.caption", required=False))
    elif kind_in == "reaction":
        reaction = _obj(msg, "reaction", f"{path}.reaction", required=False)
        message.update(kind="reaction", text=_text(reaction, "emoji", f"{path}.reaction.emoji", required=False))
    elif kind_in == "contacts":
        message["kind"] = "contact"
    return _canonical("message.received", "cloudapi", channel, occurred, msg_id, message=message)


_CLOUD_STATES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def _cloud_status(channel: str, status: Any, path: str) -> Event:
    if not isinstance(status, dict):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an object", field=path)
    msg_id = _text(status, "id", f"{path}.id")
    raw_state = _text(status, "status", f"{path}.status")
    state = _CLOUD_STATES.get(raw_state or "")
    if state is None:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path}.status {raw_state!r} is not a Cloud API status",
                             field=f"{path}.status")
    occurred = _epoch(_get(status, "timestamp", (str, int), f"{path}.timestamp"), f"{path}.timestamp", 1)
    recipient = _text(status, "recipient_id", f"{path}.recipient_id", required=False)
    block: dict[str, Any] = {
        "message_id": msg_id,
        "state": state,
        "recipient": _phone(recipient, f"{path}.recipient_id") if recipient else None,
    }
    errors = _list(status, "errors", f"{path}.errors")
    if errors and isinstance(errors[0], dict):
        block["error"] = {"code": errors[0].get("code"), "title": errors[0].get("title")}
    return _canonical("message.status", "cloudapi", channel, occurred, msg_id, state, status=block)


def _location(loc: dict[str, Any], lat_key: str, lon_key: str, path: str) -> dict[str, Any]:
    lat = _get(loc, lat_key, (int, float), f"{path}.{lat_key}")
    lon = _get(loc, lon_key, (int, float), f"{path}.{lon_key}")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not a valid coordinate", field=path)
    return {
        "latitude": float(lat),
        "longitude": float(lon),
        "name": _text(loc, "name", f"{path}.name", required=False),
        "address": _text(loc, "address", f"{path}.address", required=False),
    }


# --- Evolution API v2 ------------------------------------------------------------------------------
_EVO_STATUS = {
    "PENDING": "pending",
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "read",
    "ERROR": "failed",
}
_EVO_CONN = {"open": "open", "connecting": "connecting", "close": "closed", "refused": "closed"}


def _evolution(payload: dict[str, Any], ctx: Context) -> list[Event]:
    event = (_text(payload, "event", "event") or "").lower().replace("_", ".")
    channel = _text(payload, "instance", "instance")
    assert channel is not None
    data = payload.get("data")
    if event == "messages.upsert":
        items = data if isinstance(data, list) else [data]
        return [_evo_message(channel, item, f"data[{i}]" if isinstance(data, list) else "data")
                for i, item in enumerate(items)]
    if event == "messages.update":
        items = data if isinstance(data, list) else [data]
        return [_evo_status(channel, payload, item, "data", ctx) for item in items]
    when = _evo_when(payload, ctx)
    if event == "connection.update":
        data = _obj(payload, "data", "data")
        raw_state = _text(data, "state", "data.state")
        state = _EVO_CONN.get(raw_state or "")
        if state is None:
            raise PermanentError(ErrorCode.INVALID_VALUE, f"data.state {raw_state!r} is not an Evolution state",
                                 field="data.state")
        code = _code(data.get("statusReason"), "data.statusReason")
        block = connection(code, state)
        return [_canonical("connection.update", "evolution", channel, when, block["state"], code, when,
                           connection=block)]
    if event == "logout.instance":
        block = connection(401, "logged_out")
        return [_canonical("connection.update", "evolution", channel, when, "logged_out", when, connection=block)]
    if event == "qrcode.updated":
        data = _obj(payload, "data", "data")
        qr = _obj(data, "qrcode", "data.qrcode", required=False)
        code_text = str(qr.get("code") or "")
        # The QR code pairs a phone to the instance: only a digest of it is used, for the id.
        digest = hashlib.sha256(code_text.encode()).hexdigest()[:16]
        return [_canonical("qr.updated", "evolution", channel, when, digest,
                           qr={"attempt": None, "has_pairing_code": bool(qr.get("pairingCode"))})]
    return []  # presence, chats, contacts, groups: not channel events we publish


def _evo_when(payload: dict[str, Any], ctx: Context) -> str:
    value = payload.get("date_time")
    if value is None:
        return _received_at(ctx, "date_time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch(value, "date_time", 1000 if value > 1e11 else 1)
    return _iso(value, "date_time")


def _code(value: Any, path: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be a number", field=path)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be a number, not {value!r}", field=path) from None


def _evo_message(channel: str, data: Any, path: str) -> Event:
    if not isinstance(data, dict):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an object", field=path)
    key = _obj(data, "key", f"{path}.key")
    msg_id = _text(key, "id", f"{path}.key.id")
    jid = _text(key, "remoteJid", f"{path}.key.remoteJid") or ""
    participant = key.get("participant") if isinstance(key.get("participant"), str) else None
    timestamp = data.get("messageTimestamp")
    if timestamp is None:
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.messageTimestamp is required",
                             field=f"{path}.messageTimestamp")
    occurred = _epoch(timestamp, f"{path}.messageTimestamp", 1)
    content = _obj(data, "message", f"{path}.message", required=False)
    kind, text, extra = _evo_content(content, f"{path}.message")
    if key.get("fromMe") is True:
        sent = {"id": msg_id, "to": _phone(jid, f"{path}.key.remoteJid"), "kind": kind, "text": text, "by_api": None}
        return _canonical("message.sent", "evolution", channel, occurred, msg_id, message=sent)
    message: dict[str, Any] = {
        "id": msg_id,
        "from": _phone(participant or jid, f"{path}.key.remoteJid"),
        "kind": kind,
        "text": text,
        "push_name": data.get("pushName") if isinstance(data.get("pushName"), str) else None,
        **extra,
    }
    return _canonical("message.received", "evolution", channel, occurred, msg_id, message=message)


_EVO_MEDIA = {
    "imageMessage": "image",
    "audioMessage": "audio",
    "videoMessage": "video",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}


def _evo_content(content: dict[str, Any], path: str) -> tuple[str, str | None, dict[str, Any]]:
    if "conversation" in content:
        return "text", _text(content, "conversation", f"{path}.conversation", required=False), {}
    if "extendedTextMessage" in content:
        ext = _obj(content, "extendedTextMessage", f"{path}.extendedTextMessage")
        return "text", _text(ext, "text", f"{path}.extendedTextMessage.text", required=False), {}
    if "buttonsResponseMessage" in content:
        b = _obj(content, "buttonsResponseMessage", f"{path}.buttonsResponseMessage")
        title = _text(b, "selectedDisplayText", f"{path}.buttonsResponseMessage.selectedDisplayText", required=False)
        reply = {"id": _text(b, "selectedButtonId", f"{path}.buttonsResponseMessage.selectedButtonId"), "title": title}
        return "button_reply", title, {"reply": reply}
    if "templateButtonReplyMessage" in content:
        b = _obj(content, "templateButtonReplyMessage", f"{path}.templateButtonReplyMessage")
        title = _text(b, "selectedDisplayText", f"{path}.templateButtonReplyMessage.selectedDisplayText",
                      required=False)
        reply = {"id": _text(b, "selectedId", f"{path}.templateButtonReplyMessage.selectedId"), "title": title}
        return "button_reply", title, {"reply": reply}
    if "listResponseMessage" in content:
        lr = _obj(content, "listResponseMessage", f"{path}.listResponseMessage")
        single = _obj(lr, "singleSelectReply", f"{path}.listResponseMessage.singleSelectReply")
        title = _text(lr, "title", f"{path}.listResponseMessage.title", required=False)
        reply = {
            "id": _text(single, "selectedRowId", f"{path}.listResponseMessage.singleSelectReply.selectedRowId"),
            "title": title,
            "description": _text(lr, "description", f"{path}.listResponseMessage.description", required=False),
        }
        return "list_reply", title, {"reply": reply}
    if "locationMessage" in content:
        loc = _obj(content, "locationMessage", f"{path}.locationMessage")
        location = _location(loc, "degreesLatitude", "degreesLongitude", f"{path}.locationMessage")
        return "location", None, {"location": location}
    for field, kind in _EVO_MEDIA.items():
        if field in content:
            media = _obj(content, field, f"{path}.{field}", required=False)
            return kind, _text(media, "caption", f"{path}.{field}.caption", required=False), {}
    if "reactionMessage" in content:
        reaction = _obj(content, "reactionMessage", f"{path}.reactionMessage", required=False)
        return "reaction", _text(reaction, "text", f"{path}.reactionMessage.text", required=False), {}
    if "contactMessage" in content or "contactsArrayMessage" in content:
        return "contact", None, {}
    return "unknown", None, {}


def _evo_status(channel: str, payload: dict[str, Any], data: Any, path: str, ctx: Context) -> Event:
    if not isinstance(data, dict):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an object", field=path)
    key: dict[str, Any] = data["key"] if isinstance(data.get("key"), dict) else {}
    msg_id = data.get("keyId") or key.get("id") or data.get("messageId")
    if not isinstance(msg_id, str) or not msg_id:
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.keyId is required", field=f"{path}.keyId")
    raw = _text(data, "status", f"{path}.status")
    state = _EVO_STATUS.get((raw or "").upper())
    if state is None:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path}.status {raw!r} is not an Evolution status",
                             field=f"{path}.status")
    jid = data.get("remoteJid") or key.get("remoteJid")
    recipient = (digits_of(jid) or None) if isinstance(jid, str) else None
    when = _evo_when(payload, ctx)
    return _canonical("message.status", "evolution", channel, when, msg_id, state,
                      status={"message_id": msg_id, "state": state, "recipient": recipient})


# --- uazapiGO --------------------------------------------------------------------------------------
_UAZ_CONN = {"connected": "open", "open": "open", "connecting": "connecting", "disconnected": "closed",
             "qrcode": "qr", "qr": "qr"}
_UAZ_KINDS = {
    "conversation": "text",
    "extendedtextmessage": "text",
    "buttonsresponsemessage": "button_reply",
    "templatebuttonreplymessage": "button_reply",
    "listresponsemessage": "list_reply",
    "locationmessage": "location",
    "imagemessage": "image",
    "audiomessage": "audio",
    "videomessage": "video",
    "documentmessage": "document",
    "stickermessage": "sticker",
    "reactionmessage": "reaction",
    "contactmessage": "contact",
}


def _uazapi(payload: dict[str, Any], ctx: Context) -> list[Event]:
    event = (_text(payload, "EventType", "EventType") or "").lower()
    channel = _text(payload, "instanceName", "instanceName")
    assert channel is not None
    if event == "connection":
        inst = _obj(payload, "instance", "instance")
        raw = _text(inst, "status", "instance.status")
        state = _UAZ_CONN.get((raw or "").lower())
        if state is None:
            raise PermanentError(ErrorCode.INVALID_VALUE, f"instance.status {raw!r} is not a uazapi status",
                                 field="instance.status")
        reason_text = inst.get("lastDisconnectReason") if state == "closed" else None
        code = _reason_code(reason_text)
        block = connection(code, state)
        when = _uaz_when(payload, inst, ctx)
        return [_canonical("connection.update", "uazapi", channel, when, block["state"], code, when,
                           connection=block)]
    if event == "messages":
        return [_uaz_message(channel, _obj(payload, "message", "message"))]
    return []


def _reason_code(text: Any) -> int | None:
    """`"401: logged out from another device"` -> 401."""
    if not isinstance(text, str):
        return None
    head = text.split(":", 1)[0].strip()
    return int(head) if head.isdigit() else None


def _uaz_when(payload: dict[str, Any], inst: dict[str, Any], ctx: Context) -> str:
    for holder, key in ((inst, "lastDisconnect"), (payload, "timestamp"), (inst, "updated")):
        value = holder.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return _epoch(value, key, 1000)
        if isinstance(value, str) and value:
            return _iso(value, key)
    return _received_at(ctx, "timestamp")


def _uaz_message(channel: str, msg: dict[str, Any]) -> Event:
    msg_id = _text(msg, "messageid", "message.messageid")
    occurred = _epoch(_get(msg, "messageTimestamp", (int, float, str), "message.messageTimestamp"),
                      "message.messageTimestamp", 1000)
    mtype = (_text(msg, "messageType", "message.messageType", required=False) or "").lower()
    kind = _UAZ_KINDS.get(mtype, "unknown")
    text = _text(msg, "text", "message.text", required=False)
    extra: dict[str, Any] = {}
    if kind in ("button_reply", "list_reply"):
        reply_id = _text(msg, "buttonOrListid", "message.buttonOrListid")
        extra["reply"] = {"id": reply_id, "title": text}
    elif kind == "location":
        content = _obj(msg, "content", "message.content")
        extra["location"] = _location(content, "degreesLatitude", "degreesLongitude", "message.content")
    chat = _text(msg, "chatid", "message.chatid", required=False) or ""
    if msg.get("fromMe") is True:
        sent = {"id": msg_id, "to": _phone(chat, "message.chatid") if chat else None, "kind": kind, "text": text,
                "by_api": msg.get("wasSentByApi") if isinstance(msg.get("wasSentByApi"), bool) else None}
        return _canonical("message.sent", "uazapi", channel, occurred, msg_id, message=sent)
    sender = _text(msg, "sender_pn", "message.sender_pn", required=False) or chat
    message = {"id": msg_id, "from": _phone(sender, "message.sender_pn"), "kind": kind, "text": text, **extra}
    if isinstance(msg.get("senderName"), str):
        message["push_name"] = msg["senderName"]
    return _canonical("message.received", "uazapi", channel, occurred, msg_id, message=message)


_NORMALIZERS: dict[str, Callable[[dict[str, Any], Context], list[Event]]] = {
    "cloudapi": _cloudapi,
    "evolution": _evolution,
    "uazapi": _uazapi,
}
