"""Running a worker: logs, the health server, signals, and a graceful stop of every component."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from apiplus.health import HealthServer, Readiness, ReadyCheck
from apiplus.loopprobe import LoopProbe

log = logging.getLogger("apiplus.runtime")
READY_EVERY_SECONDS = 5.0  # the ready gauge is refreshed this often, scraped or not


def tune_gc() -> None:
    """For a worker about to serve (ingest, dispatch): what start-up allocated (modules, clients, schemas,
    tables) is never scanned again, and young collections run every 50k allocations, not every 700."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


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
    ready_gauge: Any | None = None,
    app: web.Application | None = None,
) -> int:
    """Run a worker's components to completion on uvloop (APIPLUS_EVENT_LOOP=asyncio for the stock loop).

    `ready_gauge` (the service's `apiplus_<service>_ready`) is set from `ready` every few seconds.
    """
    main = run_components(components, registry=registry, ready=ready, http_host=http_host, http_port=http_port,
                          on_stop=on_stop, ready_gauge=ready_gauge, app=app)
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
    ready_gauge: Any | None = None,
    app: web.Application | None = None,
) -> None:
    """Run until SIGTERM/SIGINT: then stop fetching, finish in-flight work, commit, leave the group.
    Beside the components, the event loop's probe (loopprobe.py) feeds the registry."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    readiness = Readiness(ready, ready_gauge)
    server = HealthServer(http_host, http_port, registry, readiness, app)
    await server.start()
    log.info("worker started", extra={"http_port": http_port})
    tasks = [asyncio.create_task(c.run(), name=type(c).__name__) for c in components]
    stopper = asyncio.create_task(stop_requested.wait())
    watcher = asyncio.create_task(_refresh(readiness)) if ready_gauge is not None else None
    probe = asyncio.create_task(LoopProbe(registry).run(), name="loop-probe")  # apiplus_event_loop_* metrics
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
        probe.cancel()
        if watcher is not None:
            watcher.cancel()
        if ready_gauge is not None:
            ready_gauge.set(0)
        if on_stop is not None:
            await on_stop()
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(sig)
    log.info("worker stopped")
    if failed:
        raise SystemExit(1)


async def _refresh(readiness: Readiness) -> None:
    while True:
        try:
            await readiness()
        except Exception:  # a failing check must not end the worker; it reads as not ready
            log.warning("ready check failed", exc_info=True)
            if readiness.gauge is not None:
                readiness.gauge.set(0)
        await asyncio.sleep(READY_EVERY_SECONDS)
