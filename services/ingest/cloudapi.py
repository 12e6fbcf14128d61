"""Meta WhatsApp Cloud API webhooks -> canonical events. Pure.

One webhook can carry several entries, changes and items: each item stands or falls on its own.
"""

from __future__ import annotations

from typing import Any

from apiplus.errors import ErrorCode, PermanentError
from services.ingest.common import (
    Context,
    Outcome,
    as_object,
    canonical,
    digits_of,
    epoch,
    get,
    is_group,
    items,
    location,
    mapping,
    obj,
    req_text,
    str_or_none,
    text,
)

SOURCE = "cloudapi"
# Webhook fields that are about the account, not a channel's conversations.
_ACCOUNT_FIELDS = frozenset({
    "account_alerts", "account_review_update", "account_update", "business_capability_update",
    "business_status_update", "message_template_components_update", "message_template_quality_update",
    "message_template_status_update", "phone_number_name_update", "phone_number_quality_update",
    "security", "template_category_update", "user_preferences", "partner_solutions", "payment_configuration_update",
    "automatic_events", "tracking_events", "flows",
})
_MEDIA = frozenset({"image", "audio", "video", "document", "sticker"})
_STATES = {"sent": "sent", "delivered": "delivered", "read": "read", "played": "played", "failed": "failed"}


def normalize(payload: dict[str, Any], ctx: Context) -> Outcome:
    out = Outcome(SOURCE)
    entries = get(payload, "entry", list, "entry")
    if not entries:
        out.ignore("empty", "entry")
    for i, entry in enumerate(entries):
        entry = as_object(entry, f"entry[{i}]")
        changes = items(entry, "changes", f"entry[{i}].changes")
        if not changes:
            out.ignore("empty", "changes")
        out.each(changes, lambda change, path: _change(out, as_object(change, path), path))
    return out


def _change(out: Outcome, change: dict[str, Any], path: str) -> None:
    kind = str_or_none(change.get("field"))
    if kind in _ACCOUNT_FIELDS:
        out.ignore("account", str(kind))
        return
    if kind == "history":
        out.ignore("history_sync", "history")
        return
    if kind == "calls":
        out.ignore("calls", "calls")
        return
    if kind == "smb_app_state_sync":
        out.ignore("contacts", "smb_app_state_sync")
        return
    if kind not in ("messages", "smb_message_echoes"):
        raise PermanentError(ErrorCode.UNKNOWN_EVENT, f"{path}.field {kind!r} is not a Cloud API webhook field",
                             field=f"{path}.field")
    value = obj(change, "value", f"{path}.value")
    metadata = obj(value, "metadata", f"{path}.value.metadata")
    channel = req_text(metadata, "phone_number_id", f"{path}.value.metadata.phone_number_id")
    contacts = [c for _, c in items(value, "contacts", f"{path}.value.contacts") if isinstance(c, dict)]
    names = {str_or_none(c.get("wa_id")) or str_or_none(c.get("user_id")):
             str_or_none(mapping(c.get("profile")).get("name")) for c in contacts}
    # An error about the whole change (e.g. a message Meta could not render) applies to its items.
    value_errors = [e for _, e in items(value, "errors", f"{path}.value.errors") if isinstance(e, dict)]
    messages = items(value, "messages", f"{path}.value.messages")
    statuses = items(value, "statuses", f"{path}.value.statuses")
    echoes = items(value, "message_echoes", f"{path}.value.message_echoes")
    if not (messages or statuses or echoes):
        if value_errors:
            first = value_errors[0]
            out.ignore("gateway_error", f"value.errors {first.get('code')}: {first.get('title')}")
        else:
            out.ignore("empty", str(kind))
    # With business-scoped user ids a message may name no sender: the one contact block does.
    only = contacts[0] if len(contacts) == 1 else {}
    sole = {"from": str_or_none(only.get("wa_id")), "from_user_id": str_or_none(only.get("user_id"))}
    out.each(messages, lambda m, p: out.events.append(
        _message(channel, {**_without_none(sole), **as_object(m, p)}, names, value_errors, p)))
    out.each(statuses, lambda s, p: out.events.append(_status(channel, as_object(s, p), p)))
    out.each(echoes, lambda m, p: out.events.append(_echo(channel, as_object(m, p), p)))


def _error(error: dict[str, Any]) -> dict[str, Any]:
    code = error.get("code")
    valid = isinstance(code, int | str) and not isinstance(code, bool)
    return {"code": code if valid else None, "title": str_or_none(error.get("title"))}


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _sender(msg: dict[str, Any], path: str) -> dict[str, Any]:
    """The sender: a phone (`from`) and/or a business-scoped user id (`from_user_id`), never invented."""
    raw = text(msg, "from", f"{path}.from", required=False)
    user_id = text(msg, "from_user_id", f"{path}.from_user_id", required=False)
    if raw is None and user_id is None:
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.from is required", field=f"{path}.from")
    digits = digits_of(raw) if raw else ""
    if raw and not digits:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path}.from holds no phone digits", field=f"{path}.from")
    who: dict[str, Any] = {"from": digits[:20] or None}
    if user_id:
        who["from_user_id"] = user_id
    group = str_or_none(msg.get("group_id"))
    if group:
        who["group"] = group
    return who


def _body(msg: dict[str, Any], value_errors: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """kind, text and what goes with them, for a message item or the message inside an edit."""
    kind_in = req_text(msg, "type", f"{path}.type")
    body: dict[str, Any] = {"kind": "unknown", "text": None}
    errors = [e for _, e in items(msg, "errors", f"{path}.errors") if isinstance(e, dict)] or value_errors
    if kind_in == "text":
        body.update(kind="text", text=text(obj(msg, "text", f"{path}.text"), "body", f"{path}.text.body"))
    elif kind_in == "interactive" and isinstance(msg.get("interactive"), dict):
        inter = msg["interactive"]
        itype = req_text(inter, "type", f"{path}.interactive.type")
        if itype in ("button_reply", "list_reply"):
            reply = obj(inter, itype, f"{path}.interactive.{itype}")
            title = text(reply, "title", f"{path}.interactive.{itype}.title", required=False)
            block = {"id": req_text(reply, "id", f"{path}.interactive.{itype}.id"), "title": title}
            if itype == "list_reply":
                block["description"] = text(reply, "description", f"{path}.interactive.{itype}.description",
                                            required=False)
            body.update(kind=itype, text=title, reply=block)
        elif itype == "nfm_reply":  # a WhatsApp Flow's answer
            reply = obj(inter, "nfm_reply", f"{path}.interactive.nfm_reply")
            body.update(kind="flow_reply", text=text(reply, "body", f"{path}.interactive.nfm_reply.body",
                                                      required=False))
    elif kind_in == "button":  # quick-reply button of a template
        button = obj(msg, "button", f"{path}.button")
        title = text(button, "text", f"{path}.button.text", required=False)
        reply_id = text(button, "payload", f"{path}.button.payload", required=False) or title
        if reply_id is None:
            raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.button.payload is required",
                                 field=f"{path}.button.payload")
        body.update(kind="button_reply", text=title, reply={"id": reply_id, "title": title})
    elif kind_in == "location":
        loc = obj(msg, "location", f"{path}.location")
        body.update(kind="location", location=location(loc, "latitude", "longitude", f"{path}.location"))
    elif kind_in in _MEDIA:
        media = obj(msg, kind_in, f"{path}.{kind_in}", required=False)
        body.update(kind=kind_in, text=text(media, "caption", f"{path}.{kind_in}.caption", required=False))
    elif kind_in == "reaction":
        reaction = obj(msg, "reaction", f"{path}.reaction", required=False)
        body.update(kind="reaction", text=text(reaction, "emoji", f"{path}.reaction.emoji", required=False) or None)
        reacted = str_or_none(reaction.get("message_id"))
        if reacted:
            body["context"] = {"provider_message_id": reacted}
    elif kind_in == "contacts":
        body["kind"] = "contact"
    elif kind_in == "order":
        order = obj(msg, "order", f"{path}.order", required=False)
        body.update(kind="order", text=str_or_none(order.get("text")))
    elif kind_in == "system":
        system = obj(msg, "system", f"{path}.system")
        body.update(kind="system", text=text(system, "body", f"{path}.system.body", required=False))
        new_wa_id = str_or_none(system.get("new_wa_id")) or str_or_none(system.get("wa_id"))
        body["system"] = {"type": str_or_none(system.get("type")),
                          "new_phone": (digits_of(new_wa_id)[:20] or None) if new_wa_id else None,
                          "new_user_id": str_or_none(system.get("user_id"))}
    elif kind_in == "request_welcome":
        body["kind"] = "system"
        body["system"] = {"type": "request_welcome", "new_phone": None, "new_user_id": None}
    if body["kind"] == "unknown" and (kind_in in ("unsupported", "unknown", "interactive") or errors):
        body["kind"] = "unsupported"
    if errors and body["kind"] == "unsupported":
        body["error"] = _error(errors[0])
    context = msg.get("context")
    if isinstance(context, dict) and str_or_none(context.get("id")) and "context" not in body:
        body["context"] = {"provider_message_id": context["id"]}
    return body


def _message(channel: str, msg: dict[str, Any], names: dict[Any, Any], value_errors: list[dict[str, Any]],
             path: str) -> dict[str, Any]:
    msg_id = req_text(msg, "id", f"{path}.id")
    occurred = epoch(get(msg, "timestamp", (str, int), f"{path}.timestamp"), f"{path}.timestamp")
    kind_in = msg.get("type")
    if kind_in == "revoke":
        revoke = obj(msg, "revoke", f"{path}.revoke")
        original = req_text(revoke, "original_message_id", f"{path}.revoke.original_message_id")
        block = {"id": original, "delete_id": msg_id, "from_me": False, **_sender(msg, path)}
        return canonical("message.deleted", SOURCE, channel, occurred, original, msg_id, message=block)
    if kind_in == "edit":
        return _edit(channel, msg, msg_id, occurred, False, _sender(msg, path), path)
    if kind_in == "system" and msg.get("from") is None and msg.get("from_user_id") is None:
        system = obj(msg, "system", f"{path}.system")
        who: dict[str, Any] = {"from": None, "from_user_id": str_or_none(system.get("user_id"))}
    else:
        who = _sender(msg, path)
    message: dict[str, Any] = {"id": msg_id, **who, **_body(msg, value_errors, path)}
    name = names.get(str_or_none(msg.get("from"))) or names.get(str_or_none(msg.get("from_user_id")))
    if name:
        message["push_name"] = name
    return canonical("message.received", SOURCE, channel, occurred, msg_id, message=message)


def _edit(channel: str, msg: dict[str, Any], msg_id: str, occurred: str, from_me: bool, who: dict[str, Any],
          path: str) -> dict[str, Any]:
    edit = obj(msg, "edit", f"{path}.edit")
    original = req_text(edit, "original_message_id", f"{path}.edit.original_message_id")
    body = _body(obj(edit, "message", f"{path}.edit.message"), [], f"{path}.edit.message")
    body.pop("context", None)
    block = {"id": original, "edit_id": msg_id, "from_me": from_me, **who, **body}
    return canonical("message.edited", SOURCE, channel, occurred, original, msg_id, message=block)


def _echo(channel: str, msg: dict[str, Any], path: str) -> dict[str, Any]:
    """A message the business sent from the WhatsApp Business app (coexistence): `from` is the business."""
    msg_id = req_text(msg, "id", f"{path}.id")
    occurred = epoch(get(msg, "timestamp", (str, int), f"{path}.timestamp"), f"{path}.timestamp")
    raw_to = text(msg, "to", f"{path}.to", required=False)
    to_user = str_or_none(msg.get("to_user_id"))
    to = digits_of(raw_to)[:20] if raw_to else ""
    if raw_to and not to:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path}.to holds no phone digits", field=f"{path}.to")
    if not to and not to_user:
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path}.to is required", field=f"{path}.to")
    who: dict[str, Any] = {"to": to or None}
    if to_user:
        who["to_user_id"] = to_user
    if msg.get("type") == "edit":
        return _edit(channel, msg, msg_id, occurred, True, {"from": None, **who}, path)
    if msg.get("type") == "revoke":
        revoke = obj(msg, "revoke", f"{path}.revoke")
        original = req_text(revoke, "original_message_id", f"{path}.revoke.original_message_id")
        block = {"id": original, "delete_id": msg_id, "from_me": True, "from": None, **who}
        return canonical("message.deleted", SOURCE, channel, occurred, original, msg_id, message=block)
    sent = {"id": msg_id, **who, **_body(msg, [], path), "by_api": False}
    return canonical("message.sent", SOURCE, channel, occurred, msg_id, message=sent)


def _status(channel: str, status: dict[str, Any], path: str) -> dict[str, Any]:
    msg_id = req_text(status, "id", f"{path}.id")
    raw_state = req_text(status, "status", f"{path}.status")
    occurred = epoch(get(status, "timestamp", (str, int), f"{path}.timestamp"), f"{path}.timestamp")
    recipient_raw = text(status, "recipient_id", f"{path}.recipient_id", required=False)
    participant = str_or_none(status.get("recipient_participant_id"))
    group = recipient_raw if is_group(recipient_raw) or status.get("recipient_type") == "group" else None
    recipient_jid = participant if group else recipient_raw
    recipient = digits_of(recipient_jid)[:20] or None if recipient_jid else None
    if raw_state == "deleted":  # On-Premises / older Cloud API: the customer deleted their message
        block = {"id": msg_id, "delete_id": None, "from_me": False, "from": recipient}
        return canonical("message.deleted", SOURCE, channel, occurred, msg_id, None, message=block)
    state = _STATES.get(raw_state)
    if state is None:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path}.status {raw_state!r} is not a Cloud API status",
                             field=f"{path}.status")
    out: dict[str, Any] = {"message_id": msg_id, "state": state, "recipient": recipient}
    user_id = str_or_none(status.get("recipient_participant_user_id") or status.get("recipient_user_id"))
    if user_id:
        out["recipient_user_id"] = user_id
    if group:
        out["group"] = group
    errors = [e for _, e in items(status, "errors", f"{path}.errors") if isinstance(e, dict)]
    if errors:
        out["error"] = _error(errors[0])
    # In a group, each participant reports its own state of the same message.
    participant_part = (recipient_jid,) if group else ()
    return canonical("message.status", SOURCE, channel, occurred, msg_id, state, *participant_part, status=out)
