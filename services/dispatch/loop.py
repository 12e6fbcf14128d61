"""What dispatch remembers of a sent message, and how it recognises a gateway's echo of it. Pure.

The records and keys are the shared contract in apiplus.correlation; this module decides what goes in
them from a command and its channel (see docs/loop.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apiplus.correlation import (
    Echo,
    Offer,
    SentRecord,
    echo_key,
    fingerprint,
    offer_key,
    options_of,
    outbound_fingerprints,
    sent_key,
)
from apiplus.envelope import parse_rfc3339
from services.dispatch.core import INTERACTIVE, Channel, Command, effective_message


class EchoWaitInterrupted(Exception):
    """The worker stops (or gives up the partition) while an echo is awaited: left for redelivery."""


@dataclass(frozen=True)
class Remember:
    """Redis writes for a command that ended `sent`: (key, value, ttl seconds)."""

    writes: tuple[tuple[str, bytes, int], ...]


def degraded(command: Command, channel: Channel) -> bool:
    return command.kind in INTERACTIVE and channel.mode != "plus"


def remember(command: Command, channel: Channel, provider_message_id: str, now: float, *, sent_ttl: int,
             offer_window: int, resolved_by: str | None = None) -> Remember:
    """The sent-map record, and for an interactive message degraded to text, the offer to its recipient."""
    offer_kind, options = options_of(command.message)
    record = SentRecord(command.command_id, channel.channel_id, command.to, command.kind, now, options, resolved_by)
    writes = [(sent_key(channel.instance, provider_message_id), record.encode(), sent_ttl)]
    if degraded(command, channel):
        offer = Offer(command.command_id, channel.channel_id, provider_message_id, command.to, offer_kind, now,
                      options)
        writes.append((offer_key(channel.instance, command.to), offer.encode(), offer_window))
    return Remember(tuple(writes))


def echo_keys(command: Command, channel: Channel) -> tuple[str, ...]:
    """Where echoes of this command's content to its recipient are stored (one key per acceptable text)."""
    message = effective_message(command, channel)
    return tuple(echo_key(channel.instance, command.to, digest) for digest in outbound_fingerprints(message))


def echo_of(event: dict[str, Any]) -> tuple[str, Echo] | None:
    """A canonical `message.sent` as an echo to store: (key, echo); None when it cannot match an API send.

    Messages sent from the phone or the Business app (`by_api` false), to groups, or without text are
    skipped: none of them can be the echo of a command.
    """
    if event.get("type") != "message.sent":
        return None
    message = event.get("message")
    if not isinstance(message, dict) or message.get("by_api") is False:
        return None
    to, msg_id, text = message.get("to"), message.get("id"), message.get("text")
    digest = fingerprint(text) if isinstance(text, str) else None
    if not isinstance(to, str) or not to or not isinstance(msg_id, str) or not msg_id or digest is None:
        return None
    try:
        at = parse_rfc3339(event["occurred_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
    return echo_key(event["channel_id"], to, digest), Echo(msg_id, at)
