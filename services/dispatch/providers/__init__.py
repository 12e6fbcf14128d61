"""The provider registry. Adding a provider: one module with a `Provider` subclass, one line below."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apiplus.errors import ErrorCode, PermanentError
from apiplus.settings import load_settings
from services.dispatch.providers.base import PacingDefaults, PacingRule, Provider, ProviderSettings, Request
from services.dispatch.providers.cloudapi import CloudApi
from services.dispatch.providers.evolution import Evolution
from services.dispatch.providers.simulator import Simulator
from services.dispatch.providers.uazapi import Uazapi

REGISTRY: dict[str, type[Provider]] = {p.name: p for p in (CloudApi, Evolution, Uazapi, Simulator)}
NAMES: tuple[str, ...] = tuple(REGISTRY)

__all__ = ["NAMES", "REGISTRY", "PacingDefaults", "PacingRule", "Provider", "ProviderSettings", "Request",
           "configure", "provider_class"]


def provider_class(name: str) -> type[Provider]:
    cls = REGISTRY.get(name)
    if cls is None:
        raise PermanentError(ErrorCode.UNSUPPORTED, f"unknown provider {name!r}", field="provider")
    return cls


def configure(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Provider]:
    """Every registered provider with its settings from the environment (`overrides` win, for tests)."""
    providers: dict[str, Provider] = {}
    for name, cls in REGISTRY.items():
        extra = dict((overrides or {}).get(name, {}))
        settings = cls.settings_class(**extra) if extra else load_settings(cls.settings_class)
        providers[name] = cls(settings)
    return providers
