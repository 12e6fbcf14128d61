"""A local provider simulator: answers Cloud API, Evolution and uazapi send requests like the providers.

Every request is appended to a JSONL log (no credentials: headers are never logged). A request with an
`Idempotency-Key` already answered gets the same answer and is logged with `"replay": true`, so the log
shows how many distinct sends reached the "provider". Faults are injected on demand through
`POST /_sim/faults`: latency, 429 with Retry-After, 5xx, timeouts and connection resets. With a
GatewayLoop (services.dispatch.simloop) it also emits the gateways' status, echo and reply webhooks.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from services.dispatch.simloop import GatewayLoop

AUTH_HEADERS = ("authorization", "apikey", "token")


@dataclass
class Faults:
    mode: str = "none"  # none | latency | 429 | 500 | 503 | timeout | reset
    probability: float = 1.0
    latency_ms: int = 0
    retry_after: float = 1.0
    remaining: int | None = None  # faults left to inject; None: until changed

    def draw(self) -> str:
        if self.mode == "none" or self.remaining == 0 or random.random() >= self.probability:
            return "none"
        if self.remaining is not None:
            self.remaining -= 1
        return self.mode


def has_credentials(headers: Mapping[str, str]) -> bool:
    """A non-empty token, apikey or bearer credential, as every provider requires."""
    for name in AUTH_HEADERS:
        value = headers.get(name, "").strip()
        if name == "authorization" and value.lower().startswith("bearer"):
            value = value[len("bearer"):].strip()
        if value:
            return True
    return False


def provider_of(path: str) -> str | None:
    if path.startswith("/send/"):
        return "uazapi"
    if path.startswith("/message/"):
        return "evolution"
    if path.endswith("/messages"):
        return "cloudapi"
    return None


def _recipient(provider: str, body: dict[str, Any]) -> str:
    return str(body.get("to") if provider == "cloudapi" else body.get("number") or "")


def provider_response(provider: str, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
    to = _recipient(provider, body)
    if provider == "cloudapi":
        return {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": message_id}]}
    if provider == "evolution":
        return {"key": {"remoteJid": f"{to}@s.whatsapp.net", "fromMe": True, "id": message_id},
                "status": "PENDING", "messageTimestamp": int(time.time())}
    return {"messageid": message_id, "id": message_id, "status": "Pending", "chatid": f"{to}@s.whatsapp.net"}


class Simulator:
    def __init__(self, log_path: Path, base_latency_ms: int = 0, loop: GatewayLoop | None = None) -> None:
        self.log_path = log_path
        self.loop = loop
        self.base_latency_ms = base_latency_ms
        self.faults = Faults()
        self.answers: dict[str, dict[str, Any]] = {}
        self.received = 0
        self._log = log_path.open("ab", buffering=0)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/_sim/faults", self._set_faults)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_get("/healthz", self._healthz)
        if self.loop is not None:
            self.loop.routes(app)
        app.router.add_post("/{tail:.*}", self._send)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response({"received": self.received, "distinct": len(self.answers),
                                  "faults": self.faults.__dict__})

    async def _set_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.faults = Faults(**{k: v for k, v in data.items() if k in Faults.__dataclass_fields__})
        return web.json_response(self.faults.__dict__)

    async def _send(self, request: web.Request) -> web.StreamResponse:
        provider = provider_of(request.path)
        if provider is None:
            return web.json_response({"error": "unknown endpoint"}, status=404)
        if not has_credentials(request.headers):
            return web.json_response({"error": "missing credentials"}, status=401)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": "invalid JSON"}, status=400)
        self.received += 1
        fault = self.faults.draw()
        delay = self.base_latency_ms + (self.faults.latency_ms if fault == "latency" else 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        if fault == "timeout":
            await asyncio.sleep(120)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault == "429":
            return web.json_response({"error": "rate limited"}, status=429,
                                     headers={"Retry-After": str(self.faults.retry_after)})
        if fault in ("500", "503"):
            return web.json_response({"error": "provider failure"}, status=int(fault))
        key = request.headers.get("Idempotency-Key")
        replay = key is not None and key in self.answers
        if replay:
            answer = self.answers[key]  # type: ignore[index]
        else:
            message_id = f"SIM{uuid.uuid4().hex[:20].upper()}"
            answer = provider_response(provider, message_id, body)
            if key is not None:
                self.answers[key] = answer
            if self.loop is not None:
                self.loop.on_accepted(provider, request.path, body, message_id)
        entry = {"ts": time.time(), "provider": provider, "path": request.path, "idempotency_key": key,
                 "replay": replay, "response": answer, "body": body}
        self._log.write(orjson.dumps(entry) + b"\n")
        return web.json_response(answer)


async def serve(host: str, port: int, log_path: Path, base_latency_ms: int = 0,
                loop: GatewayLoop | None = None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    simulator = Simulator(log_path, base_latency_ms, loop)
    if loop is not None:
        await loop.start()
    runner = web.AppRunner(simulator.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(orjson.dumps({"msg": "simulator listening", "host": host, "port": port, "log": str(log_path)}).decode(),
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        if loop is not None:
            await loop.stop()
