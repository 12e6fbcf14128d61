"""The local provider simulator (services/dispatch/simulator.py): it speaks uazapi's format."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.dispatch.providers.base import ProviderSettings
from services.dispatch.providers.uazapi import Uazapi


class SimulatorSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_DISPATCH_SIMULATOR_", frozen=True, extra="ignore")

    url: str = "http://127.0.0.1:18080"
    token: SecretStr = SecretStr("simulator")


class Simulator(Uazapi):
    name = "simulator"
    settings_class: ClassVar[type[ProviderSettings]] = SimulatorSettings
