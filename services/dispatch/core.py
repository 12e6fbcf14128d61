"""Outbound commands: parsing at WhatsApp's exact limits, authorisation, degradation and rendering. Pure.

The same functions serve the worker and `apiplus dispatch render`, so what the offline command prints
is exactly what the worker sends (credentials are added by the HTTP adapter, never here).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from apiplus.envelope import parse_rfc3339
from apiplus.errors import ErrorCode, PermanentError

KINDS = ("text", "buttons", "list", "cta_url", "copy_code", "location_request")
INTERACTIVE = frozenset(KINDS) - {"text"}
PROVIDERS = ("cloudapi", "evolution", "uazapi", "simulator")

# Limits from the official Cloud API documentation (REFERENCE.md, "WhatsApp interactive limits").
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


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "body": self.body}


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


def parse_command(data: dict[str, Any]) -> Command:
    """Validate a command against WhatsApp's limits; the error names the first offending field."""
    command_id = _string(data, "command_id", "command_id", COMMAND_ID_MAX)
    channel_id = _string(data, "channel_id", "channel_id", 128)
    _string(data, "token", "token", 4096)
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
def _unsupported(provider: str, what: str) -> PermanentError:
    return _fail(ErrorCode.UNSUPPORTED, "message.kind", f"{provider} cannot send {what}")


def render(provider: str, instance: str, to: str, message: dict[str, Any]) -> Request:
    if provider not in _RENDERERS:
        raise _fail(ErrorCode.UNSUPPORTED, "provider", f"unknown provider {provider!r}")
    return _RENDERERS[provider](instance, to, message)


def _cloud_interactive(kind: str, m: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": kind}
    if m.get("header"):
        block["header"] = {"type": "text", "text": m["header"]}
    block["body"] = {"text": m["body"]}
    if m.get("footer"):
        block["footer"] = {"text": m["footer"]}
    block["action"] = action
    return block


def _render_cloudapi(instance: str, to: str, m: dict[str, Any]) -> Request:
    base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
    kind = m["kind"]
    if kind == "text":
        body = {**base, "type": "text", "text": {"preview_url": False, "body": m["body"]}}
    elif kind == "copy_code":
        template = m.get("template")
        if not template:
            raise _fail(ErrorCode.UNSUPPORTED, "message.template",
                        "cloudapi sends copy codes only in an approved template: name one in message.template")
        body = {**base, "type": "template", "template": {
            "name": template["name"],
            "language": {"code": template["language"]},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": m["body"]}]},
                {"type": "button", "sub_type": "copy_code", "index": "0",
                 "parameters": [{"type": "coupon_code", "coupon_code": m["code"]}]},
            ],
        }}
    else:
        if kind == "buttons":
            action: dict[str, Any] = {"buttons": [
                {"type": "reply", "reply": {"id": b["id"], "title": b["title"]}} for b in m["buttons"]
            ]}
            itype = "button"
        elif kind == "list":
            action = {"button": m["button"], "sections": [
                {**({"title": s["title"]} if s.get("title") else {}),
                 "rows": [{"id": r["id"], "title": r["title"],
                           **({"description": r["description"]} if r.get("description") else {})}
                          for r in s["rows"]]}
                for s in m["sections"]
            ]}
            itype = "list"
        elif kind == "cta_url":
            action = {"name": "cta_url", "parameters": {"display_text": m["display_text"], "url": m["url"]}}
            itype = "cta_url"
        else:  # location_request
            action = {"name": "send_location"}
            itype = "location_request_message"
        body = {**base, "type": "interactive", "interactive": _cloud_interactive(itype, m, action)}
    return Request("POST", f"/{quote(instance, safe='')}/messages", body)


def _render_evolution(instance: str, to: str, m: dict[str, Any]) -> Request:
    kind = m["kind"]
    name = quote(instance, safe="")
    if kind == "text":
        return Request("POST", f"/message/sendText/{name}", {"number": to, "text": m["body"]})
    if kind == "list":
        body = {
            "number": to,
            "title": m.get("header") or "",
            "description": m["body"],
            "buttonText": m["button"],
            "footerText": m.get("footer") or "",
            "sections": [
                {"title": s.get("title") or "", "rows": [
                    {"title": r["title"], "description": r.get("description") or "", "rowId": r["id"]}
                    for r in s["rows"]
                ]}
                for s in m["sections"]
            ],
        }
        return Request("POST", f"/message/sendList/{name}", body)
    if kind == "location_request":
        raise _unsupported("evolution", "location requests (it only sends location pins)")
    if kind == "buttons":
        buttons = [{"type": "reply", "displayText": b["title"], "id": b["id"]} for b in m["buttons"]]
    elif kind == "cta_url":
        buttons = [{"type": "url", "displayText": m["display_text"], "url": m["url"]}]
    else:  # copy_code
        buttons = [{"type": "copy", "displayText": m.get("display_text") or "Copiar código", "copyCode": m["code"]}]
    body = {"number": to, "title": m.get("header") or "", "description": m["body"],
            "footer": m.get("footer") or "", "buttons": buttons}
    return Request("POST", f"/message/sendButtons/{name}", body)


def _uaz_text(m: dict[str, Any]) -> str:
    """uazapi menus have no header field: the header leads the text in bold."""
    return f"*{m['header']}*\n{m['body']}" if m.get("header") else str(m["body"])


def _render_uazapi(instance: str, to: str, m: dict[str, Any]) -> Request:
    kind = m["kind"]
    if kind == "text":
        return Request("POST", "/send/text", {"number": to, "text": m["body"]})
    if kind == "location_request":
        return Request("POST", "/send/location-button", {"number": to, "text": m["body"]})
    if kind == "list":
        choices: list[str] = []
        for s in m["sections"]:
            if s.get("title"):
                choices.append(f"[{s['title']}]")
            choices += [f"{r['title']}|{r['id']}" + (f"|{r['description']}" if r.get("description") else "")
                        for r in s["rows"]]
        body: dict[str, Any] = {"number": to, "type": "list", "text": _uaz_text(m), "choices": choices,
                                "listButton": m["button"]}
    else:
        if kind == "buttons":
            choices = [f"{b['title']}|{b['id']}" for b in m["buttons"]]
        elif kind == "cta_url":
            choices = [f"{m['display_text']}|{m['url']}"]
        else:  # copy_code
            choices = [f"{m.get('display_text') or 'Copiar código'}|copy:{m['code']}"]
        body = {"number": to, "type": "button", "text": _uaz_text(m), "choices": choices}
    if m.get("footer"):
        body["footerText"] = m["footer"]
    return Request("POST", "/send/menu", body)


_RENDERERS = {
    "cloudapi": _render_cloudapi,
    "evolution": _render_evolution,
    "uazapi": _render_uazapi,
    # The local simulator speaks the PLUS gateway's (uazapi) format.
    "simulator": _render_uazapi,
}


def render_command(command: Command, channel: Channel) -> Request:
    return render(channel.provider, channel.instance, command.to, effective_message(command, channel))
