"""Evolution API (v1 and v2, Baileys channel) events -> canonical events. Pure.

Times: a message's own `messageTimestamp` (epoch seconds) first; then the Kafka integration's
envelope `timestamp` (epoch milliseconds from `Date.now()`); the envelope `date_time` last, because
Evolution writes the server's local wall-clock time with a literal `Z` (docs/ingest.md), read as
`Context.evolution_clock` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apiplus.errors import ErrorCode, PermanentError
from services.ingest.common import (
    Context,
    Outcome,
    as_object,
    canonical,
    connection,
    digest,
    epoch,
    is_group,
    iso,
    location,
    mapping,
    obj,
    party,
    received_at,
    req_text,
    status_code,
    str_or_none,
    text,
    wall_clock,
)

SOURCE = "evolution"
_STATUS = {
    "ERROR": "failed",
    "PENDING": "pending",
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "played",
}
# Baileys' numeric ack levels, as some versions forward them unmapped.
_STATUS_NUMBERS = {0: "ERROR", 1: "PENDING", 2: "SERVER_ACK", 3: "DELIVERY_ACK", 4: "READ", 5: "PLAYED"}
_CONN = {"open": "open", "connecting": "connecting", "close": "closed", "refused": "closed"}
_IGNORED_PREFIXES = (
    ("presence.", "presence"),
    ("chats.", "chats"),
    ("contacts.", "contacts"),
    ("groups.", "groups"),
    ("group.", "groups"),
    ("labels.", "labels"),
    ("typebot.", "chatbot"),
)
_IGNORED = {
    "call": "calls",
    "messages.set": "history_sync",
    "messaging.history.set": "history_sync",
    "application.startup": "instance_lifecycle",
    "instance.create": "instance_lifecycle",
    "instance.delete": "instance_lifecycle",
    "remove.instance": "instance_lifecycle",
    "creds.update": "instance_lifecycle",
    "status.instance": "duplicate_notice",  # always followed by the connection.update it summarises
}
_MEDIA = {
    "imageMessage": "image",
    "audioMessage": "audio",
    "videoMessage": "video",
    "ptvMessage": "video",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_WRAPPERS = ("ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension",
             "documentWithCaptionMessage")
_HOUSEKEEPING = frozenset({"messageContextInfo", "senderKeyDistributionMessage", "base64", "mediaUrl",
                           "speechToText"})
_REVOKE = (0, "REVOKE")
_EDIT = (14, "MESSAGE_EDIT")


def event_name(payload: dict[str, Any]) -> str:
    return (req_text(payload, "event", "event")).lower().replace("_", ".").replace("-", ".")


def normalize(payload: dict[str, Any], ctx: Context) -> Outcome:
    out = Outcome(SOURCE)
    event = event_name(payload)
    channel = req_text(payload, "instance", "instance")
    for prefix, reason in _IGNORED_PREFIXES:
        if event.startswith(prefix):
            out.ignore(reason, event)
            return out
    if event in _IGNORED:
        out.ignore(_IGNORED[event], event)
        return out
    evo = _Evolution(channel, payload, ctx, out)
    handler = _ITEM_HANDLERS.get(event)
    if handler is not None:
        data = payload.get("data")
        if data is None:
            raise PermanentError(ErrorCode.MISSING_FIELD, "data is required", field="data")
        entries = [(f"data[{i}]", d) for i, d in enumerate(data)] if isinstance(data, list) else [("data", data)]
        if not entries:
            out.ignore("empty", event)
        out.each(entries, lambda item, path: handler(evo, as_object(item, path), path, event))
        return out
    if event == "connection.update":
        out.events.append(evo.connection())
    elif event == "logout.instance":
        block = connection(401, "logged_out")
        out.events.append(canonical("connection.update", SOURCE, channel, evo.when(), "logged_out", evo.stamp(),
                                    connection=block))
    elif event == "qrcode.updated":
        evo.qr()
    else:
        raise PermanentError(ErrorCode.UNKNOWN_EVENT, f"event {event!r} is not an Evolution API event", field="event")
    return out


class _Evolution:
    def __init__(self, channel: str, payload: dict[str, Any], ctx: Context, out: Outcome) -> None:
        self.channel = channel
        self.payload = payload
        self.ctx = ctx
        self.out = out

    # --- time ------------------------------------------------------------------------------------
    def when(self) -> str:
        """The envelope's time, for events that carry none of their own."""
        stamp = self.payload.get("timestamp")  # Kafka integration: Date.now(), true epoch milliseconds
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            return epoch(stamp, "timestamp", None)
        value = self.payload.get("date_time")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return epoch(value, "date_time", None)
        clock = self.ctx.evolution_clock
        if value is None or clock == "receipt":
            return received_at(self.ctx, "date_time")
        if clock == "utc":
            return iso(value, "date_time")
        if not isinstance(value, str):
            raise PermanentError(ErrorCode.WRONG_TYPE, "date_time must be an ISO 8601 string", field="date_time")
        return wall_clock(value, clock, "date_time")

    def stamp(self) -> str:
        """What identifies this delivery of an envelope event: the gateway's own clock reading, as sent."""
        for key in ("date_time", "timestamp"):
            if self.payload.get(key) is not None:
                return str(self.payload[key])
        return digest(self.payload.get("data"))

    def message_time(self, data: dict[str, Any], path: str) -> str:
        value = data.get("messageTimestamp")
        if value is not None:
            return epoch(value, f"{path}.messageTimestamp")
        return self.when()

    # --- messages --------------------------------------------------------------------------------
    def message(self, data: dict[str, Any], path: str, event: str) -> None:
        key = obj(data, "key", f"{path}.key")
        msg_id = req_text(key, "id", f"{path}.key.id")
        remote = req_text(key, "remoteJid", f"{path}.key.remoteJid")
        if remote == "status@broadcast":
            self.out.ignore("status_broadcast", event)
            return
        from_me = key.get("fromMe") is True or event == "send.message"
        content = _unwrap(obj(data, "message", f"{path}.message", required=False))
        proto = content.get("protocolMessage")
        if proto is None and isinstance(content.get("editedMessage"), dict):
            proto = mapping(content["editedMessage"].get("message")).get("protocolMessage")
        if isinstance(proto, dict):
            self.protocol(proto, f"{path}.message.protocolMessage", event, data=data, outer_key=key)
            return
        if "editedMessage" in content:
            raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.message.editedMessage.message.protocolMessage is "
                                 "required (an edit without the edited message)",
                                 field=f"{path}.message.editedMessage.message.protocolMessage")
        if "pollUpdateMessage" in content:
            self.out.ignore("poll_update", "pollUpdateMessage")
            return
        if content and not set(content) - _HOUSEKEEPING:
            self.out.ignore("protocol", ",".join(sorted(content)))
            return
        occurred = self.message_time(data, path)
        body = _content(content, data, f"{path}.message")
        group = remote if is_group(remote) else None
        if from_me:
            to, to_lid = (None, None) if group else party(remote, _alternatives(key, "remoteJid"),
                                                          f"{path}.key.remoteJid")
            sent: dict[str, Any] = {"id": msg_id, "to": to, **body,
                                    "by_api": True if event == "send.message" else None}
            _put(sent, to_lid=to_lid, group=group)
            self.out.events.append(canonical("message.sent", SOURCE, self.channel, occurred, msg_id, message=sent))
            return
        if group:
            sender, lid = party(key.get("participant") or data.get("participant"), _alternatives(key, "participant"),
                                f"{path}.key.participant")
        else:
            sender, lid = party(remote, _alternatives(key, "remoteJid"), f"{path}.key.remoteJid")
        message: dict[str, Any] = {"id": msg_id, "from": sender, **body,
                                   "push_name": str_or_none(data.get("pushName"))}
        _put(message, from_lid=lid, group=group)
        self.out.events.append(canonical("message.received", SOURCE, self.channel, occurred, msg_id, message=message))

    def protocol(self, proto: dict[str, Any], path: str, event: str, data: dict[str, Any] | None = None,
                 outer_key: dict[str, Any] | None = None) -> None:
        """A protocolMessage: an edit or a revoke of an earlier message (the rest is housekeeping)."""
        kind = proto.get("type")
        if kind not in _REVOKE + _EDIT:
            self.out.ignore("protocol", f"protocolMessage {kind}")
            return
        key = obj(proto, "key", f"{path}.key")
        original = req_text(key, "id", f"{path}.key.id")
        outer = outer_key or {}
        from_me = (outer.get("fromMe") if outer else key.get("fromMe")) is True or event == "send.message.update"
        who = self.author(outer or key, from_me, path)
        stamp = proto.get("timestampMs")
        if stamp is not None:
            occurred = epoch(stamp, f"{path}.timestampMs", 1000)
        elif data is not None and data.get("messageTimestamp") is not None:
            occurred = epoch(data["messageTimestamp"], "messageTimestamp")
        else:
            occurred = self.when()
        change_id = str_or_none(outer.get("id"))
        if kind in _REVOKE:
            block = {"id": original, "delete_id": change_id, "from_me": from_me, **who}
            self.out.events.append(canonical("message.deleted", SOURCE, self.channel, occurred, original, change_id,
                                             message=block))
            return
        edited = _unwrap(obj(proto, "editedMessage", f"{path}.editedMessage"))
        body = _content(edited, {}, f"{path}.editedMessage")
        body.pop("context", None)
        block = {"id": original, "edit_id": change_id, "from_me": from_me, **who, **body}
        self.out.events.append(canonical("message.edited", SOURCE, self.channel, occurred, original,
                                         change_id or digest(block.get("text")), message=block))

    def author(self, key: dict[str, Any], from_me: bool, path: str) -> dict[str, Any]:
        """Who wrote a message an edit or deletion refers to (`from`), or its recipient when we did (`to`)."""
        remote = key.get("remoteJid")
        if not isinstance(remote, str) or not remote:
            return {"from": None}
        if is_group(remote):
            who: dict[str, Any] = {"from": None, "group": remote}
            if not from_me and key.get("participant"):
                number, lid = party(key["participant"], _alternatives(key, "participant"), f"{path}.key.participant")
                who["from"] = number
                _put(who, from_lid=lid)
            return who
        number, lid = party(remote, _alternatives(key, "remoteJid"), f"{path}.key.remoteJid")
        if from_me:
            out: dict[str, Any] = {"from": None, "to": number}
            _put(out, to_lid=lid)
            return out
        out = {"from": number}
        _put(out, from_lid=lid)
        return out

    def deletion(self, data: dict[str, Any], path: str, event: str) -> None:
        key = data["key"] if isinstance(data.get("key"), dict) else data
        msg_id = req_text(key, "id", f"{path}.id" if key is data else f"{path}.key.id")
        from_me = key.get("fromMe") is True
        block = {"id": msg_id, "delete_id": None, "from_me": from_me, **self.author(key, from_me, path)}
        self.out.events.append(canonical("message.deleted", SOURCE, self.channel, self.when(), msg_id, None,
                                         message=block))

    # --- statuses --------------------------------------------------------------------------------
    def status(self, data: dict[str, Any], path: str, event: str) -> None:
        key: dict[str, Any] = data["key"] if isinstance(data.get("key"), dict) else {}
        msg_id = str_or_none(data.get("keyId")) or str_or_none(data.get("id")) or str_or_none(key.get("id"))
        if msg_id is None:
            raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.keyId is required", field=f"{path}.keyId")
        raw = data.get("status")
        raw = _STATUS_NUMBERS.get(raw, raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        if raw is None or (isinstance(raw, str) and raw.upper() == "DELETED"):
            # Evolution sends no status, or labels it DELETED (`status[n] ?? 'DELETED'`), for updates
            # that carry no delivery status: edits and poll votes. A real deletion never comes this
            # way (it is `messages.delete`); see docs/ingest.md.
            self.out.ignore("status_less_update", f"messages.update status {raw}")
            return
        if not isinstance(raw, str) or not raw:
            raise PermanentError(ErrorCode.WRONG_TYPE, f"{path}.status must be a string", field=f"{path}.status")
        remote = data.get("remoteJid") or key.get("remoteJid")
        from_me = (data["fromMe"] if isinstance(data.get("fromMe"), bool) else key.get("fromMe")) is True
        stamp = data.get("datetime")  # v1: Date.now() when the update was handled
        occurred = epoch(stamp, f"{path}.datetime", None) if stamp is not None else self.when()
        state = _STATUS.get(raw.upper())
        if state is None:
            raise PermanentError(ErrorCode.INVALID_VALUE, f"{path}.status {raw!r} is not an Evolution status",
                                 field=f"{path}.status")
        block: dict[str, Any] = {"message_id": msg_id, "state": state, "recipient": None, "from_me": from_me}
        participant = data.get("participant") or key.get("participant")
        group = remote if is_group(remote) else None
        target = participant if group else remote
        if isinstance(target, str) and target:
            number, lid = party(target, (), f"{path}.remoteJid")
            block["recipient"] = number
            _put(block, recipient_lid=lid)
        _put(block, group=group)
        participant_part = (target,) if group else ()
        self.out.events.append(canonical("message.status", SOURCE, self.channel, occurred, msg_id, state,
                                         *participant_part, status=block))

    # --- connection ------------------------------------------------------------------------------
    def connection(self) -> dict[str, Any]:
        data = obj(self.payload, "data", "data")
        raw_state = req_text(data, "state", "data.state")
        state = _CONN.get(raw_state)
        if state is None:
            raise PermanentError(ErrorCode.INVALID_VALUE, f"data.state {raw_state!r} is not an Evolution state",
                                 field="data.state")
        code = status_code(data.get("statusReason"), "data.statusReason")
        block = connection(code, state)
        return canonical("connection.update", SOURCE, self.channel, self.when(), block["state"], code, self.stamp(),
                         connection=block)

    def qr(self) -> None:
        data = obj(self.payload, "data", "data")
        qr = data.get("qrcode")
        if not isinstance(qr, dict):
            if "statusCode" in data or "message" in data:  # "QR code limit reached": a connection.update follows
                self.out.ignore("duplicate_notice", "qrcode limit reached")
                return
            raise PermanentError(ErrorCode.MISSING_FIELD, "data.qrcode is required", field="data.qrcode")
        code_text = str_or_none(qr.get("code")) or str_or_none(qr.get("base64"))
        if code_text is None:
            raise PermanentError(ErrorCode.MISSING_FIELD, "data.qrcode.code is required", field="data.qrcode.code")
        # The QR code pairs a phone to the instance: only a digest of it is used, for the id.
        self.out.events.append(canonical("qr.updated", SOURCE, self.channel, self.when(), digest(code_text),
                                         qr={"attempt": None, "has_pairing_code": bool(qr.get("pairingCode"))}))


# The events whose `data` holds items (one or a list), and the method each item goes to.
_ITEM_HANDLERS: dict[str, Callable[[_Evolution, dict[str, Any], str, str], None]] = {
    "messages.upsert": _Evolution.message,
    "send.message": _Evolution.message,
    "messages.update": _Evolution.status,
    "messages.edited": _Evolution.protocol,
    "send.message.update": _Evolution.protocol,
    "messages.delete": _Evolution.deletion,
}


def _unwrap(content: dict[str, Any]) -> dict[str, Any]:
    """Ephemeral, view-once and captioned-document wrappers hold the real message one level down."""
    for _ in range(3):
        for wrapper in _WRAPPERS:
            inner = content.get(wrapper)
            if isinstance(inner, dict) and isinstance(inner.get("message"), dict):
                content = {**{k: v for k, v in content.items() if k != wrapper}, **inner["message"]}
                break
        else:
            return content
    return content


def _alternatives(key: dict[str, Any], field: str) -> list[Any]:
    """The phone-number forms Baileys versions put next to a LID (`remoteJidAlt`, `senderPn`, …)."""
    if field == "remoteJid":
        return [key.get("remoteJidAlt"), key.get("senderPn"), key.get("remoteJidPn"), key.get("senderLid")]
    return [key.get("participantAlt"), key.get("participantPn"), key.get("senderPn"), key.get("participantLid")]


def _put(block: dict[str, Any], **optional: Any) -> None:
    block.update({k: v for k, v in optional.items() if v is not None})


def _content(content: dict[str, Any], data: dict[str, Any], path: str) -> dict[str, Any]:
    kind, text_value, extra = _kind(content, path)
    body: dict[str, Any] = {"kind": kind, "text": text_value, **extra}
    quoted = _quoted_id(content, data)
    if quoted and "context" not in body:
        body["context"] = {"provider_message_id": quoted}
    return body


def _quoted_id(content: dict[str, Any], data: dict[str, Any]) -> str | None:
    info = data.get("contextInfo")
    if isinstance(info, dict) and str_or_none(info.get("stanzaId")):
        return str(info["stanzaId"])
    for value in content.values():
        if isinstance(value, dict) and isinstance(value.get("contextInfo"), dict):
            stanza = str_or_none(value["contextInfo"].get("stanzaId"))
            if stanza:
                return stanza
    return None


def _kind(content: dict[str, Any], path: str) -> tuple[str, str | None, dict[str, Any]]:
    if "conversation" in content:
        return "text", text(content, "conversation", f"{path}.conversation", required=False), {}
    if "extendedTextMessage" in content:
        ext = obj(content, "extendedTextMessage", f"{path}.extendedTextMessage")
        return "text", text(ext, "text", f"{path}.extendedTextMessage.text", required=False), {}
    if "buttonsResponseMessage" in content:
        b = obj(content, "buttonsResponseMessage", f"{path}.buttonsResponseMessage")
        title = text(b, "selectedDisplayText", f"{path}.buttonsResponseMessage.selectedDisplayText", required=False)
        reply = {"id": req_text(b, "selectedButtonId", f"{path}.buttonsResponseMessage.selectedButtonId"),
                 "title": title}
        return "button_reply", title, {"reply": reply}
    if "templateButtonReplyMessage" in content:
        b = obj(content, "templateButtonReplyMessage", f"{path}.templateButtonReplyMessage")
        title = text(b, "selectedDisplayText", f"{path}.templateButtonReplyMessage.selectedDisplayText",
                     required=False)
        reply = {"id": req_text(b, "selectedId", f"{path}.templateButtonReplyMessage.selectedId"), "title": title}
        return "button_reply", title, {"reply": reply}
    if "listResponseMessage" in content:
        lr = obj(content, "listResponseMessage", f"{path}.listResponseMessage")
        single = obj(lr, "singleSelectReply", f"{path}.listResponseMessage.singleSelectReply")
        title = text(lr, "title", f"{path}.listResponseMessage.title", required=False)
        reply = {
            "id": req_text(single, "selectedRowId", f"{path}.listResponseMessage.singleSelectReply.selectedRowId"),
            "title": title,
            "description": text(lr, "description", f"{path}.listResponseMessage.description", required=False),
        }
        return "list_reply", title, {"reply": reply}
    for field in ("locationMessage", "liveLocationMessage"):
        if field in content:
            loc = obj(content, field, f"{path}.{field}")
            return "location", None, {"location": location(loc, "degreesLatitude", "degreesLongitude",
                                                           f"{path}.{field}")}
    for field, kind in _MEDIA.items():
        if field in content:
            media = obj(content, field, f"{path}.{field}", required=False)
            return kind, text(media, "caption", f"{path}.{field}.caption", required=False), {}
    if "reactionMessage" in content:
        reaction = obj(content, "reactionMessage", f"{path}.reactionMessage", required=False)
        reacted = mapping(reaction.get("key"))
        extra = {"context": {"provider_message_id": reacted["id"]}} if str_or_none(reacted.get("id")) else {}
        return "reaction", str_or_none(reaction.get("text")), extra
    if "contactMessage" in content or "contactsArrayMessage" in content:
        return "contact", None, {}
    for field in ("pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3"):
        if field in content:
            poll = obj(content, field, f"{path}.{field}", required=False)
            return "poll", str_or_none(poll.get("name")), {}
    if not content:  # Baileys could not decrypt it ("waiting for this message")
        return "unsupported", None, {}
    return "unknown", None, {}


