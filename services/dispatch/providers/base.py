"""The contract every provider module fulfils: rendering, credentials, message ids, pacing, endpoint.

Rendering is pure (the offline `render` command calls it without any settings); the rest needs the
provider's own settings, read from `APIPLUS_DISPATCH_<PROVIDER>_*`. HTTP is not here: the client in
services/dispatch/http.py calls these methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from apiplus.errors import ErrorCode, PermanentError


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "body": self.body}


@dataclass(frozen=True)
class PacingRule:
    """How far apart one channel's sends go. Seconds; `recipient_gap` 0 means no per-recipient rule."""

    min_gap: float
    jitter: float
    hourly_cap: int
    recipient_gap: float = 0.0


@dataclass(frozen=True)
class PacingDefaults:
    """The service-wide pacing defaults (APIPLUS_DISPATCH_MIN_GAP_MS, _JITTER_MS, _HOURLY_CAP)."""

    min_gap_ms: int
    jitter_ms: int
    hourly_cap: int


class ProviderSettings(BaseSettings):
    """A provider's endpoint and credential; subclasses set `env_prefix` and the defaults.

    The credential is a secret: never logged, never in a result or a dead letter.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    url: str
    token: SecretStr = SecretStr("")

    def secret(self) -> str:
        return self.token.get_secret_value()


def unsupported(field: str, message: str) -> PermanentError:
    return PermanentError(ErrorCode.UNSUPPORTED, message, field=field)


class Provider:
    """One provider. Subclasses implement `render`, `auth_headers` and `message_id`; pacing is optional."""

    name: ClassVar[str]
    settings_class: ClassVar[type[ProviderSettings]]

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    @property
    def base_url(self) -> str:
        return self.settings.url.rstrip("/")

    @staticmethod
    def render(instance: str, to: str, message: dict[str, Any]) -> Request:
        """The provider's request for a validated (possibly degraded) message. Pure."""
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    @staticmethod
    def message_id(answer: Any) -> str | None:
        """The provider's message id in a successful answer, or None."""
        raise NotImplementedError

    def pacing(self, overrides: Mapping[str, int], defaults: PacingDefaults) -> PacingRule:
        """The anti-ban default: a fixed gap plus random jitter, and an hourly cap; per channel overridable."""
        return PacingRule(
            min_gap=int(overrides.get("min_gap_ms", defaults.min_gap_ms)) / 1000,
            jitter=int(overrides.get("jitter_ms", defaults.jitter_ms)) / 1000,
            hourly_cap=int(overrides.get("hourly_cap", defaults.hourly_cap)),
        )
