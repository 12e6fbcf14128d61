"""What every dialect normaliser shares: the context, the outcome, field access with specific errors,
identities (phone, LID, business-scoped user id), times and canonical events. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apiplus.envelope import deterministic_id, make_event, parse_rfc3339, rfc3339, rfc3339_from_epoch
from apiplus.errors import ErrorCode, PermanentError

PRODUCER = "apiplus-ingest"
Event = dict[str, Any]

# Why a raw record (or one item of it) yields no canonical event. A closed set: it labels a metric.
IGNORE_REASONS = (
    "presence",  # typing / online notices
    "chats",  # chat list changes
    "contacts",  # address book changes
    "groups",  # group metadata and membership
    "labels",  # WhatsApp Business labels
    "calls",  # call offers / rejections
    "history_sync",  # bulk history sets sent after pairing
    "instance_lifecycle",  # gateway-side instance created / removed / started, credentials saved
    "chatbot",  # gateway-side bot integrations (typebot...)
    "account",  # Cloud API account, template, quality, capability updates
    "status_broadcast",  # WhatsApp "Status" stories, not a chat
    "protocol",  # WhatsApp protocol housekeeping messages (key distribution, history notices...)
    "poll_update",  # encrypted poll votes (the aggregate arrives as a status update)
    "duplicate_notice",  # a notice that repeats another event we publish (e.g. Evolution status.instance)
    "empty",  # a well-formed envelope with no items in it
    "gateway_error",  # the gateway reports an error that belongs to no message (Cloud API value.errors)
    "status_less_update",  # Evolution messages.update without a delivery status (an edit, a poll vote)
)

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


class Context(NamedTuple):
    """What the shell knows about a raw record beyond its payload (one per record: a tuple is cheap to build)."""

    dialect: str | None = None  # forced by a header or an option
    # When the record was received: the Kafka record timestamp in the worker, the time of reading
    # (or --now) offline. The time of events that carry none, and of distrusted gateway clocks.
    received_at_ms: int | None = None
    # How to read Evolution's envelope `date_time` (server wall-clock with a literal Z):
    # "receipt" distrusts it and uses received_at_ms; "utc" trusts it (a server running in UTC);
    # an IANA zone name ("America/Sao_Paulo") reads it as that zone's wall-clock time.
    evolution_clock: str = "receipt"


@dataclass(frozen=True)
class Ignored:
    reason: str  # one of IGNORE_REASONS
    detail: str | None = None  # the gateway's own name for what was ignored, for people


@dataclass
class Outcome:
    """Everything one raw record yields: events, explicit ignores, and refused items."""

    source: str
    events: list[Event] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    errors: list[PermanentError] = field(default_factory=list)

    def ignore(self, reason: str, detail: str | None = None) -> None:
        assert reason in IGNORE_REASONS, reason
        self.ignored.append(Ignored(reason, detail))

    def refusal(self) -> PermanentError | None:
        """One error standing for every refused item (the first one's code and field), or None."""
        if not self.errors:
            return None
        first = self.errors[0]
        if len(self.errors) == 1:
            return first
        return PermanentError(first.code, f"{len(self.errors)} items refused; first: {first.message}", first.field)

    def each(self, items: Iterable[tuple[str, Any]], handle: Callable[[Any, str], None]) -> None:
        """Run `handle(item, path)` per item; one bad item is an error of its own, not of the record."""
        for path, item in items:
            try:
                handle(item, path)
            except PermanentError as exc:
                self.errors.append(exc)


# --- field access with specific errors -------------------------------------------------------------
def get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str, required: bool = True) -> Any:
    value = obj.get(key)
    if type(value) is kind:  # the usual case, decided at once (a bool is never `type(...) is int`)
        return value
    if value is None:
        if required:
            raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} is required", field=path)
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(t.__name__ for t in kinds)
        raise PermanentError(
            ErrorCode.WRONG_TYPE, f"{path} must be {names}, not {type(value).__name__}", field=path
        )
    return value


# `text` and `obj` answer the usual case (a non-empty string, a non-empty object) before
# calling `get`: they run for nearly every field of every raw record.
def text(obj: dict[str, Any], key: str, path: str, required: bool = True) -> str | None:
    value = obj.get(key)
    if type(value) is str and value:
        return value
    found: str | None = get(obj, key, str, path, required)
    if required and found == "":
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} must not be empty", field=path)
    return found


def req_text(obj: dict[str, Any], key: str, path: str) -> str:
    value = text(obj, key, path)
    assert value is not None
    return value


def obj(holder: dict[str, Any], key: str, path: str, required: bool = True) -> dict[str, Any]:
    value = holder.get(key)
    if type(value) is dict and value:
        return value
    found: dict[str, Any] = get(holder, key, dict, path, required) or {}
    return found


def items(holder: dict[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
    """(path, item) for each element of an optional list."""
    value: list[Any] = get(holder, key, list, path, required=False) or []
    return [(f"{path}[{i}]", item) for i, item in enumerate(value)]


def as_object(item: Any, path: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an object", field=path)
    return item


def mapping(value: Any) -> dict[str, Any]:
    """`value` if it is an object, else an empty one (for optional, loosely typed gateway blocks)."""
    return value if isinstance(value, dict) else {}


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- times -----------------------------------------------------------------------------------------
def epoch(value: Any, path: str, per_second: int | None = 1) -> str:
    """An epoch timestamp as RFC 3339: `per_second` 1 for seconds, 1000 for ms, None to tell by size."""
    if type(value) is int and per_second is not None and 0 < value < 32503680000 * per_second:  # the usual case
        return rfc3339_from_epoch(value / per_second)
    if isinstance(value, dict) and "low" in value:  # protobuf Long, as some Baileys builds serialise it
        low, high = value.get("low"), value.get("high") or 0
        if isinstance(low, bool) or isinstance(high, bool) or not isinstance(low, int) or not isinstance(high, int):
            raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an epoch number (Long low/high)", field=path)
        value = (high << 32) + (low & 0xFFFFFFFF)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an epoch number", field=path)
    try:
        number = float(value)
    except ValueError:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not a number: {value!r}", field=path) from None
    if per_second is None:
        per_second = 1000 if number > 1e11 else 1
    seconds = number / per_second
    if not 0 < seconds < 32503680000:  # after 1970, before year 3000
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is out of range: {value!r}", field=path)
    return rfc3339_from_epoch(seconds)


def iso(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be an ISO 8601 string", field=path)
    try:
        return rfc3339(parse_rfc3339(value))
    except ValueError:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not an ISO 8601 timestamp", field=path) from None


def received_at(ctx: Context, path: str) -> str:
    if ctx.received_at_ms is None:  # only a caller that passes no record time gets here
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} is required (no time in the event)", field=path)
    return rfc3339_from_epoch(ctx.received_at_ms / 1000)


def wall_clock(value: str, zone: str, path: str) -> str:
    """A wall-clock time written with a fake `Z`, read as local time in `zone`."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PermanentError(ErrorCode.INVALID_VALUE, f"unknown time zone {zone!r} for {path}", field=path) from None
    try:
        naive = datetime.fromisoformat(value.removesuffix("Z").removesuffix("z")).replace(tzinfo=None)
    except ValueError:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not an ISO 8601 timestamp", field=path) from None
    return rfc3339(naive.replace(tzinfo=tz))


def valid_zone(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


# --- identities ------------------------------------------------------------------------------------
def digits_of(jid: str) -> str:
    """`5511999999999@s.whatsapp.net` or `+55 11 99999-9999` -> `5511999999999`; device suffixes dropped."""
    user = jid.split("@", 1)[0].split(":", 1)[0]
    if user.isdigit():  # the usual case: nothing to drop
        return user
    return "".join(ch for ch in user if ch.isdigit())


def is_lid(jid: Any) -> bool:
    user = jid.split("@", 1)[0].split(":", 1)[0] if isinstance(jid, str) and jid.endswith("@lid") else ""
    return user.isascii() and user.isdigit()


def is_group(jid: Any) -> bool:
    return isinstance(jid, str) and jid.endswith("@g.us")


def lid_of(jid: str) -> str:
    """`123456789012345:7@lid` -> `123456789012345@lid` (the device suffix is not part of the identity)."""
    return jid.split("@", 1)[0].split(":", 1)[0] + "@lid"


def phone(value: str, path: str) -> str:
    digits = digits_of(value)
    if not digits:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} holds no phone digits", field=path)
    return digits[:20]


def party(jid: Any, alternatives: Iterable[Any], path: str) -> tuple[str | None, str | None]:
    """(phone digits, LID) of a contact given as `jid`, with the phone numbers the gateway gives alongside.

    A LID (`…@lid`) is a privacy identifier, not a phone number: its digits never become the phone.
    """
    alternatives = list(alternatives)
    jid_is_lid = is_lid(jid)
    lid = lid_of(jid) if jid_is_lid else None
    candidates = alternatives if jid_is_lid else [jid, *alternatives]
    found = None
    for candidate in candidates:  # the first phone; a LID given alongside a phone is kept too
        if is_lid(candidate):
            if lid is None:
                lid = lid_of(candidate)
        elif found is None and isinstance(candidate, str) and candidate and not is_group(candidate):
            found = digits_of(candidate) or None
    if found is not None:
        return found[:20], lid
    if lid is None and not isinstance(jid, str):
        raise PermanentError(ErrorCode.MISSING_FIELD, f"{path} is required", field=path)
    if lid is None:
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} holds no phone digits", field=path)
    return None, lid


# --- canonical events ------------------------------------------------------------------------------
def canonical(type_: str, source: str, channel_id: str, occurred_at: str, *id_parts: Any, **payload: Any) -> Event:
    return make_event(type_, event_id=deterministic_id(source, channel_id, type_, *id_parts),
                      occurred_at=occurred_at, producer=PRODUCER, channel_id=channel_id, source=source, **payload)


def digest(value: Any) -> str:
    """A short digest, for ids built from content that must not travel (QR codes) or has no id."""
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


def connection(code: int | None, state: str) -> dict[str, Any]:
    """A connection block; a terminal code (401) always means logged out, whatever the gateway said."""
    if code == 200:  # Evolution's default when Baileys gave no disconnect error: no code at all
        code = None
    if code in TERMINAL_CODES:
        state = "logged_out"
    reason = DISCONNECT_REASONS.get(code) if code is not None and state != "open" else None
    if reason is None and state == "logged_out":
        reason = "logged_out"
    return {"state": state, "code": code, "reason": reason}


MAX_STATUS_CODE = 2**31 - 1  # a gateway's status or disconnect code (HTTP-like, Baileys' 401..515)


def status_code(value: Any, path: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be a number", field=path)
    try:
        code = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        raise PermanentError(ErrorCode.WRONG_TYPE, f"{path} must be a number, not {value!r}", field=path) from None
    if not 0 <= code <= MAX_STATUS_CODE:  # 1e23 parses as a float whose int no JSON encoder here can write
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is out of range: {value!r}", field=path)
    return code


def location(loc: dict[str, Any], lat_key: str, lon_key: str, path: str) -> dict[str, Any]:
    lat = get(loc, lat_key, (int, float), f"{path}.{lat_key}")
    lon = get(loc, lon_key, (int, float), f"{path}.{lon_key}")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise PermanentError(ErrorCode.INVALID_VALUE, f"{path} is not a valid coordinate", field=path)
    return {
        "latitude": float(lat),
        "longitude": float(lon),
        "name": text(loc, "name", f"{path}.name", required=False),
        "address": text(loc, "address", f"{path}.address", required=False),
    }
