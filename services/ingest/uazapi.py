"""uazapiGO (whatsmeow) webhooks -> canonical events. Pure.

Message times are epoch milliseconds; `connection` events carry no time of their own and take the
record's (Context.received_at_ms).
"""

from __future__ import annotations

from typing import Any

from apiplus.errors import ErrorCode, PermanentError
from services.ingest.common import (
    MAX_STATUS_CODE,
    Context,
    Outcome,
    canonical,
    connection,
    digest,
    epoch,
    is_group,
    is_lid,
    iso,
    lid_of,
    location,
    mapping,
    obj,
    party,
    received_at,
    req_text,
    str_or_none,
)

SOURCE = "uazapi"
_CONN = {"connected": "open", "open": "open", "connecting": "connecting", "disconnected": "closed",
         "qrcode": "qr", "qr": "qr"}
_KINDS = {
    "conversation": "text",
    "extendedtextmessage": "text",
    "buttonsresponsemessage": "button_reply",
    "templatebuttonreplymessage": "button_reply",
    "interactiveresponsemessage": "button_reply",
    "listresponsemessage": "list_reply",
    "locationmessage": "location",
    "livelocationmessage": "location",
    "imagemessage": "image",
    "audiomessage": "audio",
    "videomessage": "video",
    "ptvmessage": "video",
    "documentmessage": "document",
    "documentwithcaptionmessage": "document",
    "stickermessage": "sticker",
    "reactionmessage": "reaction",
    "contactmessage": "contact",
    "contactsarraymessage": "contact",
    "pollcreationmessage": "poll",
    "pollcreationmessagev3": "poll",
    "pollupdatemessage": "poll_vote",
}
_IGNORED = {
    "presence": "presence",
    "chats": "chats",
    "chat_labels": "labels",
    "labels": "labels",
    "contacts": "contacts",
    "groups": "groups",
    "call": "calls",
    "history": "history_sync",
    "blocks": "contacts",
    "leads": "contacts",
    "sender": "chatbot",
}
# Receipt types (whatsmeow's `types.ReceiptType`, and uazapi's `state` words) -> canonical states.
_RECEIPTS = {
    "": "delivered",
    "delivered": "delivered",
    "delivery": "delivered",
    "read": "read",
    "read-self": "read",
    "played": "played",
    "played-self": "played",
    "sent": "sent",
    "sender": "sent",
    "failed": "failed",
    "error": "failed",
}
# Receipt types that say nothing about delivery: a retry request, a background device's receipt not
# shown as ticks, a peer or history-sync acknowledgement, the server failing a device.
_NOT_DELIVERY = frozenset({"retry", "inactive", "peer_msg", "hist_sync", "server-error"})
_DELETED = frozenset({"deleted", "revoked", "delete", "revoke"})


def normalize(payload: dict[str, Any], ctx: Context) -> Outcome:
    out = Outcome(SOURCE)
    event = req_text(payload, "EventType", "EventType").lower()
    channel = req_text(payload, "instanceName", "instanceName")
    if event in _IGNORED:
        out.ignore(_IGNORED[event], event)
    elif event == "connection":
        _connection(out, channel, payload, ctx)
    elif event == "messages":
        _message(out, channel, obj(payload, "message", "message"), ctx)
    elif event in ("messages_update", "message_update"):
        _update(out, channel, payload, ctx)
    else:
        raise PermanentError(ErrorCode.UNKNOWN_EVENT, f"EventType {event!r} is not a uazapi event",
                             field="EventType")
    return out


# --- connection ------------------------------------------------------------------------------------
def _connection(out: Outcome, channel: str, payload: dict[str, Any], ctx: Context) -> None:
    inst = obj(payload, "instance", "instance")
    raw = req_text(inst, "status", "instance.status")
    state = _CONN.get(raw.lower())
    if state is None:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"instance.status {raw!r} is not a uazapi status",
                             field="instance.status")
    code = _reason_code(inst.get("lastDisconnectReason")) if state == "closed" else None
    if state == "closed" and code is None and payload.get("type") == "LoggedOut":
        code = 401
    block = connection(code, state)
    when, stamp = _when(payload, inst, state, ctx)
    qr = str_or_none(inst.get("qrcode"))
    # Nothing but the state distinguishes two deliveries of a time-less event: the id is built from
    # what the gateway sent (its event_id, or the content), never from the time we received it.
    identity = str_or_none(payload.get("event_id")) or stamp or digest((raw, inst.get("lastDisconnectReason"), qr))
    out.events.append(canonical("connection.update", SOURCE, channel, when, block["state"], code, identity,
                                connection=block))
    if qr:
        # The QR code pairs a phone to the instance: only a digest of it is used, for the id.
        out.events.append(canonical("qr.updated", SOURCE, channel, when, digest(qr),
                                    qr={"attempt": None, "has_pairing_code": bool(inst.get("paircode"))}))


def _reason_code(text_value: Any) -> int | None:
    """`"401: logged out from another device"` -> 401."""
    if not isinstance(text_value, str):
        return None
    head = text_value.split(":", 1)[0].strip()
    return int(head) if head.isdigit() and int(head) <= MAX_STATUS_CODE else None


def _when(payload: dict[str, Any], inst: dict[str, Any], state: str, ctx: Context) -> tuple[str, str | None]:
    """(occurred_at, the gateway's own time as sent, if any). `lastDisconnect` dates only a disconnect."""
    holders = [(payload, "timestamp")] + ([(inst, "lastDisconnect")] if state == "closed" else [])
    for holder, key in holders:
        value = holder.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return epoch(value, key, None), str(value)
        if isinstance(value, str) and value:
            return iso(value, key), value
    return received_at(ctx, "timestamp"), None


# --- messages --------------------------------------------------------------------------------------
def _message(out: Outcome, channel: str, msg: dict[str, Any], ctx: Context) -> None:
    msg_id = req_text(msg, "messageid", "message.messageid")
    stamp = msg.get("messageTimestamp")
    occurred = epoch(stamp, "message.messageTimestamp", 1000) if stamp not in (None, "", 0) \
        else received_at(ctx, "message.messageTimestamp")
    mtype = (str_or_none(msg.get("messageType")) or "").lower()
    chat = str_or_none(msg.get("chatid"))
    if chat == "status@broadcast":
        out.ignore("status_broadcast", "status@broadcast")
        return
    group = chat if is_group(chat) or msg.get("isGroup") is True else None
    content = mapping(msg.get("content"))
    body = _body(mtype, msg, content)
    from_me = msg.get("fromMe") is True
    edited = str_or_none(msg.get("edited"))
    if edited:
        body.pop("context", None)
        who = _to(msg, chat, group) if from_me else _from(msg, chat, group)
        block = {"id": edited, "edit_id": msg_id, "from_me": from_me, **({"from": None} if from_me else {}), **who,
                 **body}
        out.events.append(canonical("message.edited", SOURCE, channel, occurred, edited, msg_id, message=block))
        return
    if from_me:
        by_api = msg.get("wasSentByApi") if isinstance(msg.get("wasSentByApi"), bool) else None
        sent = {"id": msg_id, **_to(msg, chat, group), **body, "by_api": by_api}
        out.events.append(canonical("message.sent", SOURCE, channel, occurred, msg_id, message=sent))
        return
    message = {"id": msg_id, **_from(msg, chat, group), **body}
    if isinstance(msg.get("senderName"), str) and msg["senderName"]:
        message["push_name"] = msg["senderName"]
    out.events.append(canonical("message.received", SOURCE, channel, occurred, msg_id, message=message))


def _from(msg: dict[str, Any], chat: str | None, group: str | None) -> dict[str, Any]:
    sender = str_or_none(msg.get("sender"))
    if group:
        jid, path = sender, "message.sender"
    else:
        jid, path = (sender if sender and (is_lid(sender) or not chat) else chat), "message.chatid"
    alternatives = [msg.get("sender_pn")] + ([] if group else [chat, msg.get("chatlid")]) + [msg.get("sender_lid")]
    number, lid = party(jid, alternatives, path)
    who: dict[str, Any] = {"from": number}
    if lid is None and is_lid(msg.get("sender_lid")):
        lid = lid_of(msg["sender_lid"])
    if lid:
        who["from_lid"] = lid
    if group:
        who["group"] = group
    return who


def _to(msg: dict[str, Any], chat: str | None, group: str | None) -> dict[str, Any]:
    if group:
        return {"to": None, "group": group}
    if chat is None:
        raise PermanentError(ErrorCode.MISSING_FIELD, "message.chatid is required", field="message.chatid")
    number, lid = party(chat, [msg.get("chatlid")], "message.chatid")
    if lid is None and is_lid(msg.get("chatlid")):
        lid = lid_of(msg["chatlid"])
    who: dict[str, Any] = {"to": number}
    if lid:
        who["to_lid"] = lid
    return who


def _body(mtype: str, msg: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    kind = _KINDS.get(mtype, "unknown")
    text_value = str_or_none(msg.get("text"))
    body: dict[str, Any] = {"kind": kind, "text": text_value}
    if kind in ("button_reply", "list_reply"):
        response = mapping(content.get("Response"))
        single = mapping(content.get("singleSelectReply"))
        title = (str_or_none(msg.get("vote")) or str_or_none(content.get("title"))
                 or str_or_none(response.get("SelectedDisplayText")) or str_or_none(content.get("selectedDisplayText"))
                 or text_value)
        reply_id = (str_or_none(msg.get("buttonOrListid")) or str_or_none(single.get("selectedRowID"))
                    or str_or_none(content.get("selectedButtonID")) or str_or_none(content.get("selectedID")))
        if reply_id is None:
            raise PermanentError(ErrorCode.MISSING_FIELD, "message.buttonOrListid is required",
                                 field="message.buttonOrListid")
        body["reply"] = {"id": reply_id, "title": title}
        if kind == "list_reply":
            body["reply"]["description"] = str_or_none(content.get("description"))
        body["text"] = title
    elif kind == "location":
        body["location"] = location(content, "degreesLatitude", "degreesLongitude", "message.content")
    elif kind in ("image", "video", "document") and text_value is None:
        body["text"] = str_or_none(content.get("caption"))
    elif kind == "poll_vote":
        body["text"] = str_or_none(msg.get("vote"))
    reference = str_or_none(msg.get("reaction")) if kind == "reaction" else None
    info = mapping(content.get("contextInfo"))
    reference = reference or str_or_none(msg.get("quoted")) or str_or_none(info.get("stanzaID"))
    if reference:
        body["context"] = {"provider_message_id": reference}
    return body


# --- receipts --------------------------------------------------------------------------------------
def _update(out: Outcome, channel: str, payload: dict[str, Any], ctx: Context) -> None:
    """A receipt for one or more messages (whatsmeow's events.Receipt, uazapi's `messages_update`)."""
    event = obj(payload, "event", "event")
    ids = event.get("MessageIDs")
    if not isinstance(ids, list) or not ids:
        raise PermanentError(ErrorCode.MISSING_FIELD, "event.MessageIDs is required", field="event.MessageIDs")
    # `state` / `event.Type` name the receipt ("Delivered", "Read", "read-self"); the top-level
    # `type` ("ReadReceipt") is only the class of event.
    word = next((w for w in (payload.get("state"), event.get("Type")) if isinstance(w, str) and w), "")
    occurred = _receipt_time(event.get("Timestamp"), ctx)
    chat = str_or_none(event.get("Chat"))
    group = chat if is_group(chat) or _flag(event.get("IsGroup")) else None
    # IsFromMe says who sent the receipt: our own device (we read their message) or the contact.
    own_receipt = _flag(event.get("IsFromMe"))
    from_me = None if own_receipt is None else not own_receipt
    counterpart = str_or_none(event.get("Sender")) if group else chat
    alternatives = [event.get("sender_pn"), event.get("SenderAlt"), event.get("RecipientAlt"), event.get("sender_lid")]
    number, lid = party(counterpart, alternatives, "event.Chat") if counterpart else (None, None)
    for index, msg_id in enumerate(ids):
        if not isinstance(msg_id, str) or not msg_id:
            out.errors.append(PermanentError(ErrorCode.WRONG_TYPE, f"event.MessageIDs[{index}] must be a string",
                                             field=f"event.MessageIDs[{index}]"))
            continue
        if word.lower() in _DELETED:
            block: dict[str, Any] = {"id": msg_id, "delete_id": None, "from_me": from_me,
                                     "from": None if from_me else number}
            if group:
                block["group"] = group
            out.events.append(canonical("message.deleted", SOURCE, channel, occurred, msg_id, None, message=block))
            continue
        if word.lower() in _NOT_DELIVERY:
            out.ignore("protocol", f"receipt {word}")
            return
        state = _RECEIPTS.get(word.lower())
        if state is None:
            raise PermanentError(ErrorCode.INVALID_VALUE, f"receipt {word!r} is not a uazapi receipt type",
                                 field="state")
        status: dict[str, Any] = {"message_id": msg_id, "state": state, "recipient": number, "from_me": from_me}
        if lid:
            status["recipient_lid"] = lid
        if group:
            status["group"] = group
        participant_part = (counterpart,) if group else ()
        out.events.append(canonical("message.status", SOURCE, channel, occurred, msg_id, state, *participant_part,
                                    status=status))


def _flag(value: Any) -> bool | None:
    """uazapi writes some booleans as the strings "True" / "False"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _receipt_time(value: Any, ctx: Context) -> str:
    """`event.Timestamp`: epoch seconds, as a number or a string of digits, or an ISO 8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch(value, "event.Timestamp", None)
    if isinstance(value, str) and value.strip().isdigit():
        return epoch(value.strip(), "event.Timestamp", None)
    if isinstance(value, str) and value:
        return iso(value, "event.Timestamp")
    return received_at(ctx, "event.Timestamp")
