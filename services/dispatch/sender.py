"""The HTTP side of sending: one HTTP client (http.py), the request, and what the provider's answer means."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Protocol

import orjson

from services.dispatch.http import ConnectFailed, ConnectionLost, HttpClient, HttpError, RequestTimeout
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
        self.http = HttpClient(timeout_seconds=timeout_seconds, max_connections=max_in_flight)

    async def close(self) -> None:
        await self.http.close()

    def idempotent(self, provider: str) -> bool:
        """Whether the provider (or a proxy in front of it) honours Idempotency-Key."""
        return provider in self._idempotent

    async def send(self, provider: str, request: Request, idempotency_key: str) -> tuple[str, float]:
        """(provider message id, seconds taken); raises SendFailed or SendUnavailable."""
        adapter = self.providers[provider]
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key, **adapter.auth_headers()}
        started = time.perf_counter()
        try:
            response = await self.http.request(request.method, adapter.base_url, request.path,
                                               orjson.dumps(request.body), headers)
        except ConnectFailed as exc:
            raise SendUnavailable(exc.reason, ambiguous=False) from None
        except RequestTimeout as exc:
            raise SendUnavailable("timeout", ambiguous=exc.written) from None
        except ConnectionLost as exc:
            raise SendUnavailable(exc.reason, ambiguous=exc.written) from None
        except HttpError as exc:  # an answer this client cannot read
            raise SendUnavailable(f"bad answer: {exc.reason}", ambiguous=exc.written) from None
        elapsed = time.perf_counter() - started
        retry_after = _retry_after(response.headers.get("retry-after"))
        return _interpret(adapter, response.status, response.body, retry_after), elapsed


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
