"""Outbound commands: parsing at WhatsApp's exact limits, authorisation, degradation and rendering. Pure.

The same functions serve the worker and `apiplus dispatch render`, so what the offline command prints
is exactly what the worker sends (credentials are added by the HTTP adapter, never here).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from apiplus.envelope import parse_rfc3339
from apiplus.errors import ErrorCode, PermanentError
from services.dispatch.providers import NAMES, Request, provider_class

__all__ = ["PROVIDERS", "Channel", "Command", "Request", "authorize", "degrade", "effective_message",
           "parse_command", "render", "render_command", "token_digest"]

KINDS = ("text", "buttons", "list", "cta_url", "copy_code", "location_request")
INTERACTIVE = frozenset(KINDS) - {"text"}
PROVIDERS = NAMES

# WhatsApp's limits for interactive messages, from the Cloud API reference (sources in docs/dispatch.md).
TEXT_BODY = 4096
INTERACTIVE_BODY = 1024
LIST_BODY = 4096
HEADER = 60
FOOTER = 60
BUTTONS_MAX = 3
BUTTON_TITLE = 20
BUTTON_ID = 256
LIST_BUTTON = 20
SECTIONS_MAX = 10
ROWS_MAX = 10
SECTION_TITLE = 24
ROW_TITLE = 24
ROW_DESCRIPTION = 72
ROW_ID = 200
CTA_DISPLAY = 20
URL_MAX = 2000
CODE_MAX = 512
COMMAND_ID_MAX = 256


@dataclass(frozen=True)
class Channel:
    """A channel registry record."""

    channel_id: str
    tenant_id: str
    token_sha256: str
    provider: str
    mode: str
    status: str
    provider_instance: str | None = None
    pacing: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Channel:
        return cls(
            channel_id=data["channel_id"],
            tenant_id=data["tenant_id"],
            token_sha256=data["token_sha256"],
            provider=data["provider"],
            mode=data["mode"],
            status=data["status"],
            provider_instance=data.get("provider_instance"),
            pacing=dict(data.get("pacing") or {}),
        )

    @property
    def instance(self) -> str:
        return self.provider_instance or self.channel_id


@dataclass(frozen=True)
class Command:
    command_id: str
    channel_id: str
    to: str
    message: dict[str, Any]  # validated, normalised (optional fields present as None)
    not_after: str | None = None
    fallback: str = "none"

    @property
    def kind(self) -> str:
        return str(self.message["kind"])


def _fail(code: ErrorCode, field_path: str, message: str) -> PermanentError:
    return PermanentError(code, message, field=field_path)


def _string(obj: dict[str, Any], key: str, path: str, limit: int, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _fail(ErrorCode.MISSING_FIELD, path, f"{path} is required")
        return None
    if not isinstance(value, str):
        raise _fail(ErrorCode.WRONG_TYPE, path, f"{path} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise _fail(ErrorCode.INVALID_VALUE, path, f"{path} must not be blank")
    if len(value) > limit:
        raise _fail(ErrorCode.LIMIT_EXCEEDED, path, f"{path} has {len(value)} characters; the limit is {limit}")
    return value


def _array(obj: dict[str, Any], key: str, path: str, low: int, high: int) -> list[Any]:
    value = obj.get(key)
    if value is None:
        raise _fail(ErrorCode.MISSING_FIELD, path, f"{path} is required")
    if not isinstance(value, list):
        raise _fail(ErrorCode.WRONG_TYPE, path, f"{path} must be an array")
    if len(value) < low:
        raise _fail(ErrorCode.LIMIT_EXCEEDED, path, f"{path} needs at least {low} item(s)")
    if len(value) > high:
        raise _fail(ErrorCode.LIMIT_EXCEEDED, path, f"{path} has {len(value)} items; the limit is {high}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(ErrorCode.WRONG_TYPE, f"{path}[{i}]", f"{path}[{i}] must be an object")
    return value


def _url(value: str, path: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(ch.isspace() for ch in value):
        raise _fail(ErrorCode.INVALID_VALUE, path, f"{path} must be an http or https URL")
    return value


def _unique(values: list[Any], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise _fail(ErrorCode.INVALID_VALUE, f"{path}[{i}]", f"{what} {value!r} is repeated")
        seen.add(value)


def parse_command(data: dict[str, Any], *, token_required: bool = True) -> Command:
    """Validate a command against WhatsApp's limits; the error names the first offending field.

    Commands parked in the retry topic were authorised already and travel without their token.
    """
    command_id = _string(data, "command_id", "command_id", COMMAND_ID_MAX)
    channel_id = _string(data, "channel_id", "channel_id", 128)
    _string(data, "token", "token", 4096, required=token_required)
    to = _string(data, "to", "to", 15)
    assert command_id is not None
    assert channel_id is not None
    assert to is not None
    if not to.isdigit() or not 8 <= len(to) <= 15 or not to.isascii():
        raise _fail(ErrorCode.INVALID_VALUE, "to", "to must be 8 to 15 digits (E.164 without +)")
    not_after = data.get("not_after")
    if not_after is not None:
        if not isinstance(not_after, str):
            raise _fail(ErrorCode.WRONG_TYPE, "not_after", "not_after must be an RFC 3339 string")
        try:
            parse_rfc3339(not_after)
        except ValueError:
            raise _fail(ErrorCode.INVALID_VALUE, "not_after", "not_after is not an RFC 3339 timestamp") from None
    fallback = data.get("fallback", "none")
    if fallback not in ("none", "text"):
        raise _fail(ErrorCode.INVALID_VALUE, "fallback", "fallback must be 'none' or 'text'")
    message = data.get("message")
    if message is None:
        raise _fail(ErrorCode.MISSING_FIELD, "message", "message is required")
    if not isinstance(message, dict):
        raise _fail(ErrorCode.WRONG_TYPE, "message", "message must be an object")
    kind = message.get("kind")
    if kind not in KINDS:
        raise _fail(ErrorCode.INVALID_VALUE, "message.kind", f"message.kind must be one of {', '.join(KINDS)}")
    return Command(command_id, channel_id, to, _MESSAGE_PARSERS[kind](message), not_after, fallback)


def _frame(m: dict[str, Any], body_limit: int) -> dict[str, Any]:
    return {
        "body": _string(m, "body", "message.body", body_limit),
        "header": _string(m, "header", "message.header", HEADER, required=False),
        "footer": _string(m, "footer", "message.footer", FOOTER, required=False),
    }


def _parse_text(m: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "text", "body": _string(m, "body", "message.body", TEXT_BODY)}


def _parse_buttons(m: dict[str, Any]) -> dict[str, Any]:
    buttons: list[dict[str, Any]] = []
    for i, b in enumerate(_array(m, "buttons", "message.buttons", 1, BUTTONS_MAX)):
        buttons.append({
            "id": _string(b, "id", f"message.buttons[{i}].id", BUTTON_ID),
            "title": _string(b, "title", f"message.buttons[{i}].title", BUTTON_TITLE),
        })
    _unique([b["title"] for b in buttons], "message.buttons", "button title")
    _unique([b["id"] for b in buttons], "message.buttons", "button id")
    return {"kind": "buttons", **_frame(m, INTERACTIVE_BODY), "buttons": buttons}


def _parse_list(m: dict[str, Any]) -> dict[str, Any]:
    raw_sections = _array(m, "sections", "message.sections", 1, SECTIONS_MAX)
    sections: list[dict[str, Any]] = []
    total = 0
    for i, s in enumerate(raw_sections):
        path = f"message.sections[{i}]"
        title = _string(s, "title", f"{path}.title", SECTION_TITLE, required=len(raw_sections) > 1)
        rows: list[dict[str, Any]] = []
        for j, r in enumerate(_array(s, "rows", f"{path}.rows", 1, ROWS_MAX)):
            rows.append({
                "id": _string(r, "id", f"{path}.rows[{j}].id", ROW_ID),
                "title": _string(r, "title", f"{path}.rows[{j}].title", ROW_TITLE),
                "description": _string(r, "description", f"{path}.rows[{j}].description", ROW_DESCRIPTION,
                                       required=False),
            })
        total += len(rows)
        if total > ROWS_MAX:
            raise _fail(ErrorCode.LIMIT_EXCEEDED, f"{path}.rows",
                        f"lists hold at most {ROWS_MAX} rows across all sections")
        sections.append({"title": title, "rows": rows})
    _unique([r["id"] for s in sections for r in s["rows"]], "message.sections", "row id")
    return {
        "kind": "list",
        **_frame(m, LIST_BODY),
        "button": _string(m, "button", "message.button", LIST_BUTTON),
        "sections": sections,
    }


def _parse_cta(m: dict[str, Any]) -> dict[str, Any]:
    url = _string(m, "url", "message.url", URL_MAX)
    assert url is not None
    return {
        "kind": "cta_url",
        **_frame(m, INTERACTIVE_BODY),
        "display_text": _string(m, "display_text", "message.display_text", CTA_DISPLAY),
        "url": _url(url, "message.url"),
    }


def _parse_copy(m: dict[str, Any]) -> dict[str, Any]:
    code = m.get("code")
    if code is None:
        raise _fail(ErrorCode.MISSING_FIELD, "message.code", "message.code is required")
    if not isinstance(code, str):
        raise _fail(ErrorCode.WRONG_TYPE, "message.code", "message.code must be a string")
    if code == "" or not code.strip():
        raise _fail(ErrorCode.INVALID_VALUE, "message.code", "message.code must not be empty")
    if len(code) > CODE_MAX:
        raise _fail(ErrorCode.LIMIT_EXCEEDED, "message.code", f"message.code is longer than {CODE_MAX} characters")
    template = m.get("template")
    if template is not None:
        if not isinstance(template, dict):
            raise _fail(ErrorCode.WRONG_TYPE, "message.template", "message.template must be an object")
        template = {
            "name": _string(template, "name", "message.template.name", 512),
            "language": _string(template, "language", "message.template.language", 15),
        }
    return {
        "kind": "copy_code",
        "body": _string(m, "body", "message.body", INTERACTIVE_BODY),
        "code": code,  # kept byte for byte: a Pix code's CRC breaks on any change
        "display_text": _string(m, "display_text", "message.display_text", BUTTON_TITLE, required=False),
        "template": template,
    }


def _parse_location(m: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "location_request", "body": _string(m, "body", "message.body", INTERACTIVE_BODY)}


_MESSAGE_PARSERS = {
    "text": _parse_text,
    "buttons": _parse_buttons,
    "list": _parse_list,
    "cta_url": _parse_cta,
    "copy_code": _parse_copy,
    "location_request": _parse_location,
}


# --- authorisation ---------------------------------------------------------------------------------
def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authorize(command: Command, token: Any, channel: Channel | None) -> None:
    """Unknown channel or wrong token: unauthorized (the same answer, so ids cannot be probed)."""
    digest = token_digest(token) if isinstance(token, str) else ""
    expected = channel.token_sha256 if channel is not None else "0" * 64
    if not hmac.compare_digest(digest, expected) or channel is None:
        raise _fail(ErrorCode.UNAUTHORIZED, "token", "the token does not authorise this channel")
    if channel.status != "active":
        raise _fail(ErrorCode.CHANNEL_INACTIVE, "channel_id", f"the channel is {channel.status}")
    if command.kind in INTERACTIVE and channel.mode != "plus" and command.fallback != "text":
        raise _fail(ErrorCode.PLUS_REQUIRED, "message.kind",
                    f"{command.kind} needs a PLUS channel (or fallback 'text' to send it as plain text)")


# --- plain-text degradation ------------------------------------------------------------------------
def degrade(message: dict[str, Any]) -> dict[str, Any]:
    """An interactive message as text: numbered options answered by typing; links and codes on own lines."""
    kind = message["kind"]
    if kind == "text":
        return message
    parts = [message["header"]] if message.get("header") else []
    parts.append(message["body"])
    if kind == "buttons":
        parts.append("\n".join(f"{i}. {b['title']}" for i, b in enumerate(message["buttons"], 1)))
        parts.append("Responda com o número da opção.")
    elif kind == "list":
        lines: list[str] = []
        n = 0
        for section in message["sections"]:
            if section.get("title"):
                lines.append(f"*{section['title']}*")
            for row in section["rows"]:
                n += 1
                lines.append(f"{n}. {row['title']}" + (f" — {row['description']}" if row.get("description") else ""))
        parts.append("\n".join(lines))
        parts.append("Responda com o número da opção.")
    elif kind == "cta_url":
        parts.append(f"{message['display_text']}:\n{message['url']}")
    elif kind == "copy_code":
        label = message.get("display_text") or "Copie o código abaixo"
        parts.append(f"{label}:")
        parts.append(message["code"])
    elif kind == "location_request":
        parts.append("Envie sua localização pelo clipe (📎) > Localização.")
    if message.get("footer"):
        parts.append(message["footer"])
    return {"kind": "text", "body": "\n\n".join(parts)}


def effective_message(command: Command, channel: Channel) -> dict[str, Any]:
    if command.kind in INTERACTIVE and channel.mode != "plus":
        return degrade(command.message)
    return command.message


# --- rendering -------------------------------------------------------------------------------------
def render(provider: str, instance: str, to: str, message: dict[str, Any]) -> Request:
    return provider_class(provider).render(instance, to, message)


def render_command(command: Command, channel: Channel) -> Request:
    return render(channel.provider, channel.instance, command.to, effective_message(command, channel))
