"""Meta's WhatsApp Cloud API: POST /<phone-number-id>/messages with a Bearer token.

Bodies follow the Cloud API "Messages" reference (interactive `button`, `list`, `cta_url`,
`location_request_message`; copy codes only inside an approved template): see docs/dispatch.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.dispatch.providers.base import (
    PacingDefaults,
    PacingRule,
    Provider,
    ProviderSettings,
    Request,
    unsupported,
)


class CloudApiSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_DISPATCH_CLOUDAPI_", frozen=True, extra="ignore")

    url: str = "https://graph.facebook.com/v21.0"
    token: SecretStr = SecretStr("")
    # Cloud API throughput per business phone number, and its pair rate limit (one message to the
    # same recipient every 6 s); see docs/dispatch.md.
    rate_per_second: float = Field(80.0, gt=0)
    recipient_gap_ms: int = Field(6000, ge=0)


def _interactive(kind: str, m: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": kind}
    if m.get("header"):
        block["header"] = {"type": "text", "text": m["header"]}
    block["body"] = {"text": m["body"]}
    if m.get("footer"):
        block["footer"] = {"text": m["footer"]}
    block["action"] = action
    return block


def _template(m: dict[str, Any]) -> dict[str, Any]:
    template = m.get("template")
    if not template:
        raise unsupported("message.template",
                          "cloudapi sends copy codes only in an approved template: name one in message.template")
    return {
        "name": template["name"],
        "language": {"code": template["language"]},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": m["body"]}]},
            {"type": "button", "sub_type": "copy_code", "index": "0",
             "parameters": [{"type": "coupon_code", "coupon_code": m["code"]}]},
        ],
    }


def _list_action(m: dict[str, Any]) -> dict[str, Any]:
    return {"button": m["button"], "sections": [
        {**({"title": s["title"]} if s.get("title") else {}),
         "rows": [{"id": r["id"], "title": r["title"],
                   **({"description": r["description"]} if r.get("description") else {})}
                  for r in s["rows"]]}
        for s in m["sections"]
    ]}


def _action(m: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(interactive type, action block) of an interactive message."""
    kind = m["kind"]
    if kind == "buttons":
        return "button", {"buttons": [
            {"type": "reply", "reply": {"id": b["id"], "title": b["title"]}} for b in m["buttons"]
        ]}
    if kind == "list":
        return "list", _list_action(m)
    if kind == "cta_url":
        return "cta_url", {"name": "cta_url", "parameters": {"display_text": m["display_text"], "url": m["url"]}}
    return "location_request_message", {"name": "send_location"}


class CloudApi(Provider):
    name = "cloudapi"
    settings_class: ClassVar[type[ProviderSettings]] = CloudApiSettings

    @staticmethod
    def render(instance: str, to: str, message: dict[str, Any]) -> Request:
        base = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
        kind = message["kind"]
        if kind == "text":
            body = {**base, "type": "text", "text": {"preview_url": False, "body": message["body"]}}
        elif kind == "copy_code":
            body = {**base, "type": "template", "template": _template(message)}
        else:
            itype, action = _action(message)
            body = {**base, "type": "interactive", "interactive": _interactive(itype, message, action)}
        return Request("POST", f"/{quote(instance, safe='')}/messages", body)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.secret()}"}

    @staticmethod
    def message_id(answer: Any) -> str | None:
        messages = answer.get("messages") if isinstance(answer, dict) else None
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "") or None
        return None

    def pacing(self, overrides: Mapping[str, int], defaults: PacingDefaults) -> PacingRule:
        settings = self.settings
        assert isinstance(settings, CloudApiSettings)
        return PacingRule(
            min_gap=1.0 / settings.rate_per_second,
            jitter=0.0,
            hourly_cap=int(overrides.get("hourly_cap", defaults.hourly_cap)),
            recipient_gap=settings.recipient_gap_ms / 1000,
        )
