"""The provider registry: each module brings its renderer, credentials, message ids and endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from apiplus.errors import PermanentError
from services.dispatch import providers
from services.dispatch.providers import REGISTRY, configure


def test_registry_holds_every_provider_under_its_own_name() -> None:
    assert set(REGISTRY) == {"cloudapi", "evolution", "uazapi", "simulator"}
    assert all(cls.name == name for name, cls in REGISTRY.items())


@pytest.mark.parametrize(("name", "variable", "header"), [
    ("cloudapi", "APIPLUS_DISPATCH_CLOUDAPI_TOKEN", {"Authorization": "Bearer s3cr3t"}),
    ("evolution", "APIPLUS_DISPATCH_EVOLUTION_APIKEY", {"apikey": "s3cr3t"}),
    ("uazapi", "APIPLUS_DISPATCH_UAZAPI_TOKEN", {"token": "s3cr3t"}),
    ("simulator", "APIPLUS_DISPATCH_SIMULATOR_TOKEN", {"token": "s3cr3t"}),
])
def test_credentials_come_from_each_providers_variable_and_stay_secret(
        monkeypatch: pytest.MonkeyPatch, name: str, variable: str, header: dict[str, str]) -> None:
    monkeypatch.setenv(variable, "s3cr3t")
    monkeypatch.setenv(f"APIPLUS_DISPATCH_{name.upper()}_URL", "http://gateway.test/base/")
    provider = configure()[name]
    assert provider.auth_headers() == header
    assert provider.base_url == "http://gateway.test/base"
    assert "s3cr3t" not in repr(provider.settings)


@pytest.mark.parametrize(("name", "answer", "expected"), [
    ("cloudapi", {"messages": [{"id": "wamid.X"}]}, "wamid.X"),
    ("cloudapi", {"messages": []}, None),
    ("cloudapi", {"error": {"code": 100}}, None),
    ("evolution", {"key": {"id": "3EB0"}}, "3EB0"),
    ("evolution", {"key": "3EB0"}, None),
    ("uazapi", {"messageid": "ABC"}, "ABC"),
    ("uazapi", {"id": "DEF"}, "DEF"),
    ("simulator", {"messageid": "SIM1"}, "SIM1"),
    ("uazapi", {}, None),
    ("uazapi", ["not", "an", "object"], None),
])
def test_message_id_of_each_providers_answer(name: str, answer: Any, expected: str | None) -> None:
    assert REGISTRY[name].message_id(answer) == expected


def test_unknown_provider_is_refused_as_unsupported() -> None:
    with pytest.raises(PermanentError, match="unknown provider") as caught:
        providers.provider_class("telegram")
    assert caught.value.code == "unsupported"
