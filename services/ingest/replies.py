"""Replies tied back to the command that caused them, and typed answers to numbered options. Pure.

Given a canonical `message.received`, the sent-map record of the message it quotes and the latest offer
made to its sender (both looked up by the shell, see apiplus.correlation), this adds
`message.in_reply_to: {command_id, provider_message_id}` and, for a text that answers a plain-mode offer
(exactly an offered number, or an option's title ignoring case and accents), rewrites it into the
shape of a real button or list press with `reply.via: "typed"`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any, NamedTuple

from apiplus.correlation import Offer, Option, SentRecord, offer_key, sent_key
from apiplus.envelope import parse_rfc3339

REPLY_KIND = {"button": "button_reply", "list": "list_reply"}


class Lookups(NamedTuple):
    """The Redis keys one event needs; None where there is nothing to look up."""

    sent: str | None
    offer: str | None


NO_LOOKUPS = Lookups(None, None)


def quoted_id(event: dict[str, Any]) -> str | None:
    context = event.get("message", {}).get("context")
    if isinstance(context, dict) and isinstance(context.get("provider_message_id"), str):
        return str(context["provider_message_id"]) or None
    return None


def lookups(event: dict[str, Any]) -> Lookups:
    if event.get("type") != "message.received":
        return NO_LOOKUPS
    channel = event["channel_id"]
    message = event.get("message") or {}
    quoted = quoted_id(event)
    sender = message.get("from")
    typed = message.get("kind") == "text" and isinstance(sender, str) and bool(sender)
    return Lookups(sent_key(channel, quoted) if quoted else None,
                   offer_key(channel, str(sender)) if typed else None)


def fold(text: str) -> str:
    """Case- and accent-insensitive form: casefolded, NFKD with combining marks dropped, casefolded again
    (folding can itself produce letters to fold), whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def answer(text: str | None, options: Sequence[Option]) -> Option | None:
    """The option a typed text names: exactly its number, or its title folded; None if none or ambiguous."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit():
        by_number = [o for o in options if str(o.number) == stripped]
        return by_number[0] if len(by_number) == 1 else None
    folded = fold(text)
    if not folded:
        return None
    by_title = [o for o in options if fold(o.title) == folded]
    return by_title[0] if len(by_title) == 1 else None


class Correlated(NamedTuple):
    event: dict[str, Any]
    correlated: bool  # in_reply_to was added
    typed: bool  # a typed answer was recognised


def correlate(event: dict[str, Any], sent: SentRecord | None, offer: Offer | None,
              offer_window_seconds: float) -> Correlated:
    """The event with `in_reply_to` and the typed-answer rewrite applied where they apply (a new dict)."""
    if event.get("type") != "message.received" or (
        sent is None and offer is None and "in_reply_to" not in event["message"]
    ):
        return Correlated(event, False, False)  # nothing to apply: most events, kept as they are
    message = dict(event["message"])
    quoted = quoted_id(event)
    typed = False
    if quoted is not None and sent is not None:
        message["in_reply_to"] = {"command_id": sent.command_id, "provider_message_id": quoted}
    if offer is not None and _answerable(event, message, quoted, offer, offer_window_seconds):
        chosen = answer(message.get("text"), offer.options)
        if chosen is not None and offer.kind is not None:
            message["kind"] = REPLY_KIND[offer.kind]
            message["reply"] = {"id": chosen.id, "title": chosen.title, "via": "typed"}
            message["in_reply_to"] = {"command_id": offer.command_id,
                                      "provider_message_id": offer.provider_message_id}
            typed = True
    correlated = "in_reply_to" in message
    if not correlated and not typed:
        return Correlated(event, False, False)
    return Correlated({**event, "message": message}, correlated, typed)


def _answerable(event: dict[str, Any], message: dict[str, Any], quoted: str | None, offer: Offer,
                window: float) -> bool:
    """A text from the offer's recipient, within the window, quoting nothing or the offer itself."""
    if message.get("kind") != "text" or message.get("from") != offer.recipient:
        return False
    if quoted is not None and quoted != offer.provider_message_id:
        return False  # it answers an older message: only the latest offer is answerable
    try:
        at = parse_rfc3339(event["occurred_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return False
    return offer.offered_at <= at + 60 and at - offer.offered_at <= window
