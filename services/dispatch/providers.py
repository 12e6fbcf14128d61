"""The HTTP side of the provider adapters: credentials, the request, and what its answer means."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from services.dispatch.core import Request
from services.dispatch.settings import DispatchSettings


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    secret: str
    idempotent: bool


class SendFailed(Exception):
    """The provider refused the request for good (4xx other than 408/429)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"provider answered {status}")
        self.status = status
        self.detail = detail


class SendUnavailable(Exception):
    """A transient failure. `ambiguous`: the request may have reached the provider (timeout, reset)."""

    def __init__(self, reason: str, *, ambiguous: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        self.status = status


def endpoints(settings: DispatchSettings) -> dict[str, Endpoint]:
    idempotent = {p.strip() for p in settings.idempotent_providers.split(",") if p.strip()}
    pairs = {
        "cloudapi": (settings.cloudapi_url, settings.cloudapi_token),
        "evolution": (settings.evolution_url, settings.evolution_apikey),
        "uazapi": (settings.uazapi_url, settings.uazapi_token),
        "simulator": (settings.simulator_url, settings.simulator_token),
    }
    return {
        name: Endpoint(url.rstrip("/"), secret.get_secret_value(), name in idempotent)
        for name, (url, secret) in pairs.items()
    }


def auth_headers(provider: str, secret: str) -> dict[str, str]:
    if provider == "cloudapi":
        return {"Authorization": f"Bearer {secret}"}
    if provider == "evolution":
        return {"apikey": secret}
    return {"token": secret}


def message_id_of(provider: str, answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    if provider == "cloudapi":
        messages = answer.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "") or None
        return None
    if provider == "evolution":
        key = answer.get("key")
        return str(key.get("id") or "") or None if isinstance(key, dict) else None
    value = answer.get("messageid") or answer.get("id")
    return str(value) if value else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class ProviderClient:
    def __init__(self, settings: DispatchSettings) -> None:
        self.endpoints = endpoints(settings)
        self.timeout = aiohttp.ClientTimeout(total=settings.http_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._limit = settings.max_in_flight

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                  json_serialize=lambda v: orjson.dumps(v).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def idempotent(self, provider: str) -> bool:
        return self.endpoints[provider].idempotent

    async def send(self, provider: str, request: Request, idempotency_key: str) -> tuple[str, float]:
        """(provider message id, seconds taken); raises SendFailed or SendUnavailable."""
        endpoint = self.endpoints[provider]
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                   **auth_headers(provider, endpoint.secret)}
        started = time.perf_counter()
        try:
            async with self.session().request(
                request.method, endpoint.base_url + request.path, data=orjson.dumps(request.body), headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            raise SendUnavailable(f"cannot connect: {type(exc).__name__}", ambiguous=False) from None
        except TimeoutError:
            raise SendUnavailable("timeout", ambiguous=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SendUnavailable(f"connection lost: {type(exc).__name__}", ambiguous=True) from None
        elapsed = time.perf_counter() - started
        if status == 429 or status == 408 or status >= 500:
            raise SendUnavailable(f"provider answered {status}", ambiguous=False, retry_after=retry_after,
                                  status=status)
        if status >= 400:
            raise SendFailed(status, raw[:300].decode("utf-8", "replace"))
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        message_id = message_id_of(provider, answer)
        if message_id is None:
            raise SendFailed(status, "provider answered without a message id")
        return message_id, elapsed
