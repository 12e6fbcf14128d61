"""The HTTP side of sending: one aiohttp session, the request, and what the provider's answer means."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Protocol

import aiohttp
import orjson

from services.dispatch.providers import Provider, Request


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


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class ProviderPort(Protocol):
    """What the worker needs of the HTTP side (ProviderClient; a fake in unit tests)."""

    providers: dict[str, Provider]

    def idempotent(self, provider: str) -> bool: ...

    async def send(self, provider: str, request: Request, idempotency_key: str) -> tuple[str, float]: ...

    async def close(self) -> None: ...


class ProviderClient:
    def __init__(self, providers: Mapping[str, Provider], *, idempotent: Collection[str], timeout_seconds: float,
                 max_in_flight: int) -> None:
        self.providers = dict(providers)
        self._idempotent = frozenset(idempotent)
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._limit = max_in_flight

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
        """Whether the provider (or a proxy in front of it) honours Idempotency-Key."""
        return provider in self._idempotent

    async def send(self, provider: str, request: Request, idempotency_key: str) -> tuple[str, float]:
        """(provider message id, seconds taken); raises SendFailed or SendUnavailable."""
        adapter = self.providers[provider]
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key, **adapter.auth_headers()}
        started = time.perf_counter()
        try:
            async with self.session().request(
                request.method, adapter.base_url + request.path, data=orjson.dumps(request.body), headers=headers
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
        return _interpret(adapter, status, raw, retry_after), elapsed


def _interpret(adapter: Provider, status: int, raw: bytes, retry_after: float | None) -> str:
    if status == 429 or status == 408 or status >= 500:
        raise SendUnavailable(f"provider answered {status}", ambiguous=False, retry_after=retry_after, status=status)
    if status >= 400:
        raise SendFailed(status, raw[:300].decode("utf-8", "replace"))
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    message_id = adapter.message_id(answer)
    if message_id is None:
        raise SendFailed(status, "provider answered without a message id")
    return message_id
