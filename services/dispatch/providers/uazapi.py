"""uazapiGO (the PLUS gateway): /send/text, /send/menu, /send/location-button with a `token` header.

Menus have no header field, so a header leads the text in bold.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.dispatch.providers.base import Provider, ProviderSettings, Request


class UazapiSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_DISPATCH_UAZAPI_", frozen=True, extra="ignore")

    url: str = "http://127.0.0.1:8081"
    token: SecretStr = SecretStr("")


def _text(m: dict[str, Any]) -> str:
    return f"*{m['header']}*\n{m['body']}" if m.get("header") else str(m["body"])


def _list_choices(m: dict[str, Any]) -> list[str]:
    choices: list[str] = []
    for s in m["sections"]:
        if s.get("title"):
            choices.append(f"[{s['title']}]")
        choices += [f"{r['title']}|{r['id']}" + (f"|{r['description']}" if r.get("description") else "")
                    for r in s["rows"]]
    return choices


def _button_choices(m: dict[str, Any]) -> list[str]:
    kind = m["kind"]
    if kind == "buttons":
        return [f"{b['title']}|{b['id']}" for b in m["buttons"]]
    if kind == "cta_url":
        return [f"{m['display_text']}|{m['url']}"]
    return [f"{m.get('display_text') or 'Copiar código'}|copy:{m['code']}"]


class Uazapi(Provider):
    name = "uazapi"
    settings_class: ClassVar[type[ProviderSettings]] = UazapiSettings

    @staticmethod
    def render(instance: str, to: str, message: dict[str, Any]) -> Request:
        kind = message["kind"]
        if kind == "text":
            return Request("POST", "/send/text", {"number": to, "text": message["body"]})
        if kind == "location_request":
            return Request("POST", "/send/location-button", {"number": to, "text": message["body"]})
        if kind == "list":
            body: dict[str, Any] = {"number": to, "type": "list", "text": _text(message),
                                    "choices": _list_choices(message), "listButton": message["button"]}
        else:
            body = {"number": to, "type": "button", "text": _text(message), "choices": _button_choices(message)}
        if message.get("footer"):
            body["footerText"] = message["footer"]
        return Request("POST", "/send/menu", body)

    def auth_headers(self) -> dict[str, str]:
        return {"token": self.settings.secret()}

    @staticmethod
    def message_id(answer: Any) -> str | None:
        if not isinstance(answer, dict):
            return None
        value = answer.get("messageid") or answer.get("id")
        return str(value) if value else None
