"""Evolution API v2: /message/sendText|sendButtons|sendList/<instance> with an `apikey` header.

Evolution has no location-request endpoint (it only sends location pins), so that kind is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.dispatch.providers.base import Provider, ProviderSettings, Request, unsupported


class EvolutionSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_DISPATCH_EVOLUTION_", frozen=True, extra="ignore")

    url: str = "http://127.0.0.1:8080"
    # Evolution calls its credential an API key: APIPLUS_DISPATCH_EVOLUTION_APIKEY.
    token: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("APIPLUS_DISPATCH_EVOLUTION_APIKEY",
                                                                          "apikey"))


def _list(to: str, m: dict[str, Any]) -> dict[str, Any]:
    return {
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


def _buttons(m: dict[str, Any]) -> list[dict[str, Any]]:
    kind = m["kind"]
    if kind == "buttons":
        return [{"type": "reply", "displayText": b["title"], "id": b["id"]} for b in m["buttons"]]
    if kind == "cta_url":
        return [{"type": "url", "displayText": m["display_text"], "url": m["url"]}]
    return [{"type": "copy", "displayText": m.get("display_text") or "Copiar código", "copyCode": m["code"]}]


class Evolution(Provider):
    name = "evolution"
    settings_class: ClassVar[type[ProviderSettings]] = EvolutionSettings

    @staticmethod
    def render(instance: str, to: str, message: dict[str, Any]) -> Request:
        kind = message["kind"]
        name = quote(instance, safe="")
        if kind == "text":
            return Request("POST", f"/message/sendText/{name}", {"number": to, "text": message["body"]})
        if kind == "list":
            return Request("POST", f"/message/sendList/{name}", _list(to, message))
        if kind == "location_request":
            raise unsupported("message.kind", "evolution cannot send location requests (it only sends location pins)")
        body = {"number": to, "title": message.get("header") or "", "description": message["body"],
                "footer": message.get("footer") or "", "buttons": _buttons(message)}
        return Request("POST", f"/message/sendButtons/{name}", body)

    def auth_headers(self) -> dict[str, str]:
        return {"apikey": self.settings.secret()}

    @staticmethod
    def message_id(answer: Any) -> str | None:
        key = answer.get("key") if isinstance(answer, dict) else None
        return str(key.get("id") or "") or None if isinstance(key, dict) else None
