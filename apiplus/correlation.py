"""The closed loop's shared contract: Redis key names and record codecs. Pure.

dispatch writes these records when a command ends `sent`; ingest (replies, typed answers) and
dispatch's receipts stage read them. Services never import each other, so the key names and the
byte layout live here, once. Keys are per *instance*: the name the gateway gives the channel
(Cloud API phone number id, Evolution / uazapi instance name), which is what ingest publishes as
`channel_id`; records carry the registry's `channel_id` for the events they lead to.
See docs/loop.md for the windows, the fingerprints and the edge of each guarantee.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

SENT_PREFIX = "apiplus:loop:sent:"
OFFER_PREFIX = "apiplus:loop:offer:"
ECHO_PREFIX = "apiplus:loop:echo:"
RECEIPT_PREFIX = "apiplus:loop:receipt:"

SENT_TTL_SECONDS = 7 * 24 * 3600  # the mapping from provider message id to command
OFFER_WINDOW_SECONDS = 24 * 3600  # a typed answer is recognised this long after the offer
ECHO_WINDOW_SECONDS = 300  # an unknown send waits this long for the gateway's echo

REPLY_KINDS = {"buttons": "button", "list": "list"}  # command kind -> offer kind
OFFER_KINDS = ("button", "list")


class RecordError(ValueError):
    """A stored record that does not decode: treated as absent by readers, never trusted."""


def sent_key(instance: str, provider_message_id: str) -> str:
    return f"{SENT_PREFIX}{instance}:{provider_message_id}"


def offer_key(instance: str, recipient: str) -> str:
    return f"{OFFER_PREFIX}{instance}:{recipient}"


def echo_key(instance: str, recipient: str, fingerprint: str) -> str:
    return f"{ECHO_PREFIX}{instance}:{recipient}:{fingerprint}"


def receipt_key(command_id: str, status: str) -> str:
    return f"{RECEIPT_PREFIX}{command_id}:{status}"


@dataclass(frozen=True)
class Option:
    """One choice offered: its id, its title and the number it carried in plain text (1-based)."""

    id: str
    title: str
    number: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "number": self.number}


def options_of(message: Mapping[str, Any]) -> tuple[str | None, tuple[Option, ...]]:
    """(offer kind, options) of a parsed command message; numbered as the plain-text rendering numbers them:
    buttons 1..n, list rows 1..n across all sections. Kinds without choices give (None, ())."""
    kind = message.get("kind")
    if kind == "buttons":
        items = [(b["id"], b["title"]) for b in message["buttons"]]
    elif kind == "list":
        items = [(r["id"], r["title"]) for s in message["sections"] for r in s["rows"]]
    else:
        return None, ()
    return REPLY_KINDS[kind], tuple(Option(i, t, n) for n, (i, t) in enumerate(items, 1))


def _options(raw: Any) -> tuple[Option, ...]:
    if not isinstance(raw, list):
        raise RecordError("options must be a list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise RecordError("an option must be an object")
        oid, title, number = item.get("id"), item.get("title"), item.get("number")
        if not isinstance(oid, str) or not isinstance(title, str) or not isinstance(number, int):
            raise RecordError("an option needs a string id and title and an integer number")
        out.append(Option(oid, title, number))
    return tuple(out)


def _load(raw: bytes | str | None, required: Iterable[str]) -> dict[str, Any]:
    if raw is None:
        raise RecordError("no record")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError("not an object")
    for name in required:
        if not isinstance(data.get(name), str) or not data[name]:
            raise RecordError(f"{name} is missing")
    return data


@dataclass(frozen=True)
class SentRecord:
    """What dispatch remembers of a message it sent, under `sent_key(instance, provider_message_id)`."""

    command_id: str
    channel_id: str
    recipient: str
    kind: str  # the command's message kind (text, buttons, list, ...)
    sent_at: float
    options: tuple[Option, ...] = ()
    resolved_by: str | None = None  # "echo" when the id came from the gateway's echo

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "command_id": self.command_id, "channel_id": self.channel_id, "recipient": self.recipient,
            "kind": self.kind, "sent_at": self.sent_at, "options": [o.as_dict() for o in self.options],
        }
        if self.resolved_by is not None:
            data["resolved_by"] = self.resolved_by
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes | str | None) -> SentRecord:
        data = _load(raw, ("command_id", "channel_id", "recipient", "kind"))
        sent_at = data.get("sent_at")
        if not isinstance(sent_at, int | float) or isinstance(sent_at, bool):
            raise RecordError("sent_at must be a number")
        resolved = data.get("resolved_by")
        return cls(data["command_id"], data["channel_id"], data["recipient"], data["kind"], float(sent_at),
                   _options(data.get("options", [])), resolved if isinstance(resolved, str) else None)


@dataclass(frozen=True)
class Offer:
    """The latest choices offered as numbered text to one recipient, under `offer_key(instance, recipient)`.

    Overwritten by every later degraded interactive message to the same recipient, so only the latest
    is answerable; one without choices (a link, a code) leaves an offer with no options.
    """

    command_id: str
    channel_id: str
    provider_message_id: str
    recipient: str
    kind: str | None  # "button" | "list" | None (nothing to answer)
    offered_at: float
    options: tuple[Option, ...] = field(default=())

    def encode(self) -> bytes:
        return orjson.dumps({
            "command_id": self.command_id, "channel_id": self.channel_id,
            "provider_message_id": self.provider_message_id, "recipient": self.recipient, "kind": self.kind,
            "offered_at": self.offered_at, "options": [o.as_dict() for o in self.options],
        })

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Offer:
        data = _load(raw, ("command_id", "channel_id", "provider_message_id", "recipient"))
        kind = data.get("kind")
        if kind is not None and kind not in OFFER_KINDS:
            raise RecordError(f"offer kind {kind!r} is not one of {OFFER_KINDS}")
        offered_at = data.get("offered_at")
        if not isinstance(offered_at, int | float) or isinstance(offered_at, bool):
            raise RecordError("offered_at must be a number")
        return cls(data["command_id"], data["channel_id"], data["provider_message_id"], data["recipient"], kind,
                   float(offered_at), _options(data.get("options", [])))


def decode_or_none(decoder: Any, raw: bytes | str | None) -> Any:
    """A record, or None when absent or unreadable (an unreadable record correlates nothing)."""
    if raw is None:
        return None
    try:
        return decoder(raw)
    except RecordError:
        return None


# --- content fingerprints, for matching a gateway's echo to an unknown send ------------------------
def normalise_text(text: str) -> str:
    """NFC, whitespace runs (newlines included) as one space, trimmed. Case and accents are kept."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def fingerprint(text: str | None) -> str | None:
    """A digest of the normalised text; None when there is no text to compare (nothing can match)."""
    if text is None:
        return None
    normal = normalise_text(text)
    if not normal:
        return None
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


def outbound_texts(message: Mapping[str, Any]) -> tuple[str, ...]:
    """The texts a gateway may echo for a message as sent (after any plain-text degradation).

    text: the body. Interactive kinds: the body, and the header in bold before it (the uazapi menu
    layout, where the header leads the text). Nothing else of a message (buttons, rows, URLs, codes) is
    compared: gateways do not echo them in a common form.
    """
    body = message.get("body")
    if not isinstance(body, str):
        return ()
    texts = [body]
    header = message.get("header")
    if message.get("kind") != "text" and isinstance(header, str) and header:
        texts.append(f"*{header}*\n{body}")
    return tuple(texts)


def outbound_fingerprints(message: Mapping[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for text in outbound_texts(message):
        digest = fingerprint(text)
        if digest is not None and digest not in out:
            out.append(digest)
    return tuple(out)


@dataclass(frozen=True)
class Echo:
    """One echoed message, stored in a list under `echo_key(instance, recipient, fingerprint)`."""

    provider_message_id: str
    at: float  # when the gateway says the message was sent (epoch seconds)

    def encode(self) -> bytes:
        return orjson.dumps({"id": self.provider_message_id, "at": self.at})

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Echo:
        data = _load(raw, ("id",))
        at = data.get("at")
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise RecordError("at must be a number")
        return cls(data["id"], float(at))


def pick_echo(echoes: Iterable[Echo], attempt_at: float, window_seconds: float, skew_seconds: float = 60.0,
              claimed: Iterable[str] = ()) -> Echo | None:
    """The earliest echo at or after the attempt (less clock skew) and within the window, not already claimed.

    Earliest: with two identical messages to the same recipient, the unknown one was attempted first.
    """
    taken = set(claimed)
    candidates = [e for e in echoes
                  if e.provider_message_id not in taken
                  and attempt_at - skew_seconds <= e.at <= attempt_at + window_seconds + skew_seconds]
    return min(candidates, key=lambda e: (e.at, e.provider_message_id), default=None)
