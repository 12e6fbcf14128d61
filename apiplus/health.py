"""Each worker's HTTP side: /metrics, /healthz (process alive), /readyz (dependencies reachable)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


class Readiness:
    """A worker's ready check; every evaluation also sets its `apiplus_<service>_ready` gauge (1 or 0)."""

    def __init__(self, check: ReadyCheck, gauge: Any | None = None) -> None:
        self.check = check
        self.gauge = gauge

    async def __call__(self) -> dict[str, bool]:
        checks = await self.check()
        if self.gauge is not None:
            self.gauge.set(1 if all(checks.values()) else 0)
        return checks


class HealthServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: ReadyCheck) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"alive"}', content_type="application/json")

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = await self.ready()
        ok = all(checks.values())
        body = orjson.dumps({"status": "ready" if ok else "not_ready", "checks": checks})
        return web.Response(body=body, status=200 if ok else 503, content_type="application/json")
