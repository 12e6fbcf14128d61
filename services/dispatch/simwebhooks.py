"""The simulator's gateway side: status, echo and reply webhooks for messages it accepted, in each dialect.

A real gateway reports what happened to a message it sent (delivered, read), echoes it (the number's
own message, `fromMe`), and forwards the customer's answer quoting it. The simulator does the same into
the raw topic, so the whole loop (dispatch -> simulator -> raw -> ingest -> dispatch) runs locally.
Payload shapes follow each gateway's webhooks as ingest normalises them. Cloud API does not echo
messages sent through the API, so there is no Cloud API echo.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson

DIALECT_OF = {"cloudapi": "cloudapi", "evolution": "evolution", "uazapi": "uazapi"}
_EVO_STATUS = {"delivered": "DELIVERY_ACK", "read": "READ", "played": "PLAYED", "failed": "ERROR",
               "sent": "SERVER_ACK"}
_UAZ_STATUS = {"delivered": "Delivered", "read": "Read", "played": "Played", "failed": "Failed", "sent": "Sent"}


@dataclass(frozen=True)
class Accepted:
    """A message the simulator accepted, as the gateway would know it."""

    message_id: str
    dialect: str  # cloudapi | evolution | uazapi
    instance: str
    to: str
    kind: str  # text | menu | buttons | list | location
    text: str | None  # what the gateway echoes as the message's text
    body: dict[str, Any] = field(default_factory=dict)


def accepted(provider: str, path: str, body: dict[str, Any], message_id: str, default_instance: str) -> Accepted:
    """What a send request was, from its path and body."""
    if provider == "cloudapi":
        instance = unquote(path.strip("/").split("/")[0])
        kind = str(body.get("type") or "text")
        text = (body.get("text") or {}).get("body") if kind == "text" else None
        return Accepted(message_id, "cloudapi", instance, str(body.get("to") or ""), kind, text, body)
    if provider == "evolution":
        action, _, name = path.removeprefix("/message/").partition("/")
        kind = {"sendText": "text", "sendButtons": "buttons", "sendList": "list"}.get(action, action)
        text = body.get("text") if kind == "text" else body.get("description")
        return Accepted(message_id, "evolution", unquote(name) or default_instance, str(body.get("number") or ""),
                        kind, text if isinstance(text, str) else None, body)
    kind = {"/send/text": "text", "/send/menu": "menu", "/send/location-button": "location"}.get(path, "text")
    text = body.get("text")
    return Accepted(message_id, "uazapi", default_instance, str(body.get("number") or ""), kind,
                    text if isinstance(text, str) else None, body)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jid(number: str) -> str:
    return f"{number}@s.whatsapp.net"


def new_message_id() -> str:
    return f"SIMIN{uuid.uuid4().hex[:18].upper()}"


# --- statuses ----------------------------------------------------------------------------------------
def status(acc: Accepted, state: str, at: float | None = None) -> dict[str, Any]:
    at = time.time() if at is None else at
    if acc.dialect == "cloudapi":
        entry: dict[str, Any] = {"id": acc.message_id, "status": state if state != "played" else "read",
                                 "timestamp": str(int(at)), "recipient_id": acc.to}
        if state == "failed":
            entry["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
        return _cloud(acc, statuses=[entry])
    if acc.dialect == "evolution":
        return _evolution(acc, "messages.update", {
            "keyId": acc.message_id, "remoteJid": _jid(acc.to), "fromMe": True, "status": _EVO_STATUS[state],
        }, at)
    return {"EventType": "messages_update", "instanceName": acc.instance, "token": "simulator-instance-token",
            "type": "ReadReceipt", "state": _UAZ_STATUS[state],
            "event": {"MessageIDs": [acc.message_id], "Chat": _jid(acc.to), "IsFromMe": False,
                      "Type": "" if state == "delivered" else state, "Timestamp": _iso(at)}}


# --- echoes ------------------------------------------------------------------------------------------
def echo(acc: Accepted, at: float | None = None) -> dict[str, Any]:
    """The gateway's own copy of the message it sent (fromMe). Raises ValueError for Cloud API."""
    at = time.time() if at is None else at
    if acc.dialect == "cloudapi":
        raise ValueError("Cloud API does not echo messages sent through the API")
    if acc.dialect == "evolution":
        if acc.kind == "buttons":
            content: dict[str, Any] = {"buttonsMessage": {"contentText": acc.body.get("description"),
                                                          "footerText": acc.body.get("footer") or ""}}
        elif acc.kind == "list":
            content = {"listMessage": {"title": acc.body.get("title"), "description": acc.body.get("description"),
                                       "buttonText": acc.body.get("buttonText")}}
        else:
            content = {"conversation": acc.text}
        return _evolution(acc, "send.message", {
            "key": {"remoteJid": _jid(acc.to), "fromMe": True, "id": acc.message_id},
            "message": content, "messageType": next(iter(content)), "messageTimestamp": int(at), "source": "api",
        }, at)
    mtype = {"text": "ExtendedTextMessage", "menu": "ButtonsMessage", "location": "ButtonsMessage"}[acc.kind]
    if acc.kind == "menu" and acc.body.get("type") == "list":
        mtype = "ListMessage"
    return _uazapi(acc, {"messageid": acc.message_id, "chatid": _jid(acc.to), "fromMe": True, "wasSentByApi": True,
                         "messageType": mtype, "text": acc.text, "messageTimestamp": int(at * 1000)})


# --- replies -----------------------------------------------------------------------------------------
def reply(acc: Accepted, kind: str, *, text: str | None = None, reply_id: str | None = None,
          title: str | None = None, quote: bool = True, message_id: str | None = None,
          at: float | None = None) -> dict[str, Any]:
    """The customer's answer: `text` (quoting the message when `quote`), `button_reply` or `list_reply`."""
    at = time.time() if at is None else at
    msg_id = message_id or new_message_id()
    if kind not in ("text", "button_reply", "list_reply"):
        raise ValueError(f"unknown reply kind {kind!r}")
    if kind != "text" and reply_id is None:
        raise ValueError("a button or list reply needs reply_id")
    if acc.dialect == "cloudapi":
        message: dict[str, Any] = {"from": acc.to, "id": msg_id, "timestamp": str(int(at))}
        if kind == "text":
            message.update(type="text", text={"body": text or ""})
        else:
            message.update(type="interactive", interactive={"type": kind, kind: {"id": reply_id, "title": title}})
        if quote:
            message["context"] = {"from": acc.instance, "id": acc.message_id}
        return _cloud(acc, messages=[message], contacts=[{"profile": {"name": "Cliente"}, "wa_id": acc.to}])
    context = {"contextInfo": {"stanzaId": acc.message_id}} if quote else {}
    if acc.dialect == "evolution":
        if kind == "text":
            content: dict[str, Any] = ({"extendedTextMessage": {"text": text, **context}} if quote
                                       else {"conversation": text})
        elif kind == "button_reply":
            content = {"buttonsResponseMessage": {"selectedButtonId": reply_id, "selectedDisplayText": title,
                                                  **context}}
        else:
            content = {"listResponseMessage": {"title": title, "singleSelectReply": {"selectedRowId": reply_id},
                                               **context}}
        return _evolution(acc, "messages.upsert", {
            "key": {"remoteJid": _jid(acc.to), "fromMe": False, "id": msg_id}, "pushName": "Cliente",
            "message": content, "messageType": next(iter(content)), "messageTimestamp": int(at),
        }, at)
    mtype = {"text": "Conversation", "button_reply": "ButtonsResponseMessage",
             "list_reply": "ListResponseMessage"}[kind]
    body: dict[str, Any] = {"messageid": msg_id, "chatid": _jid(acc.to), "sender_pn": _jid(acc.to), "fromMe": False,
                            "messageType": mtype, "text": text if kind == "text" else title,
                            "messageTimestamp": int(at * 1000), "senderName": "Cliente"}
    if kind != "text":
        body["buttonOrListid"] = reply_id
    if quote:
        body["quoted"] = acc.message_id
    return _uazapi(acc, body)


# --- envelopes ---------------------------------------------------------------------------------------
def _cloud(acc: Accepted, **value: Any) -> dict[str, Any]:
    change = {"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": acc.instance},
        **value,
    }}
    return {"object": "whatsapp_business_account", "entry": [{"id": "SIMWABA", "changes": [change]}]}


def _evolution(acc: Accepted, event: str, data: dict[str, Any], at: float) -> dict[str, Any]:
    return {"event": event, "instance": acc.instance, "data": data, "date_time": _iso(at),
            "sender": "5500000000000@s.whatsapp.net", "server_url": "http://simulator", "apikey": "simulator-apikey"}


def _uazapi(acc: Accepted, message: dict[str, Any]) -> dict[str, Any]:
    return {"EventType": "messages", "instanceName": acc.instance, "BaseUrl": "http://simulator",
            "owner": "5500000000000", "token": "simulator-instance-token", "message": message}


def encode(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)
