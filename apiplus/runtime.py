"""Running a worker: logs, the health server, signals, and a graceful stop of every component."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from apiplus.health import HealthServer, ReadyCheck

log = logging.getLogger("apiplus.runtime")


class Component(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


def serve(
    components: Sequence[Component],
    *,
    registry: CollectorRegistry,
    ready: ReadyCheck,
    http_host: str,
    http_port: int,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    app: web.Application | None = None,
) -> int:
    """Run a worker's components to completion on uvloop (APIPLUS_EVENT_LOOP=asyncio for the stock loop)."""
    main = run_components(components, registry=registry, ready=ready, http_host=http_host, http_port=http_port,
                          on_stop=on_stop, app=app)
    if os.environ.get("APIPLUS_EVENT_LOOP", "uvloop") == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
    return 0


async def run_components(
    components: Sequence[Component],
    *,
    registry: CollectorRegistry,
    ready: ReadyCheck,
    http_host: str,
    http_port: int,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    app: web.Application | None = None,
) -> None:
    """Run until SIGTERM/SIGINT: then stop fetching, finish in-flight work, commit, leave the group."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    server = HealthServer(http_host, http_port, registry, ready, app)
    await server.start()
    log.info("worker started", extra={"http_port": http_port})
    tasks = [asyncio.create_task(c.run(), name=type(c).__name__) for c in components]
    stopper = asyncio.create_task(stop_requested.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("component failed", exc_info=task.exception(), extra={"component": task.get_name()})
        log.info("worker stopping")
        for c in components:
            c.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    finally:
        stopper.cancel()
        if on_stop is not None:
            await on_stop()
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(sig)
    log.info("worker stopped")
    if failed:
        raise SystemExit(1)
