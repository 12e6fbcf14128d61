"""dispatch: run the worker, render commands offline, or run the provider simulator."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from apiplus import redisio
from apiplus.decode import parse_object
from apiplus.jsonlog import setup_logging
from apiplus.kafka import KafkaClientConfig, KafkaClients
from apiplus.offline import run_jsonl
from apiplus.runtime import serve, tune_gc
from apiplus.settings import load_settings
from services.dispatch import memtrace, providers, stagetrace
from services.dispatch.core import Channel, parse_command, render_command
from services.dispatch.loopstore import LoopSettings, LoopStore
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.receipts_stage import build as build_receipts
from services.dispatch.sender import ProviderClient
from services.dispatch.settings import DispatchSettings
from services.dispatch.simloop import GatewayLoop
from services.dispatch.simulator import serve as serve_simulator
from services.dispatch.store import RedisRecordStore
from services.dispatch.worker import Dispatcher


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="consume commands and deliver them").set_defaults(func=_run)
    r = commands.add_parser("render", help="commands (JSONL) on stdin -> provider requests on stdout")
    r.add_argument("--provider", required=True, choices=[p for p in providers.NAMES if p != "simulator"])
    r.add_argument("--mode", choices=("plus", "plain"), default="plus",
                   help="the channel's mode (default plus); plain prints interactive messages as numbered text, "
                        "the numbers (and titles) typed answers are matched against")
    r.set_defaults(func=_render)
    s = commands.add_parser("simulator", help="run the local provider simulator")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=18080)
    s.add_argument("--log", default=".cache/simulator/requests.jsonl")
    s.add_argument("--latency-ms", type=int, default=0)
    s.add_argument("--kafka-bootstrap", default=None,
                   help="emit the gateways' status, echo and reply webhooks to this Kafka (see POST /_sim/loop)")
    s.add_argument("--raw-topic", default="apiplus.ingest.raw.v1")
    s.add_argument("--instance", default="simulator", help="the channel's instance name where the path has none")
    s.set_defaults(func=_simulator)


def _run(_: argparse.Namespace) -> int:
    settings = load_settings(DispatchSettings)
    if settings.processes > 1:
        return supervise(settings.processes, settings.http_port)
    setup_logging("dispatch", settings.log_level, settings.kafka_log_level)
    memtrace.from_env()  # opt-in allocation snapshots (APIPLUS_DISPATCH_TRACEMALLOC)
    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)
    redis = redisio.connect(settings.redis_url.get_secret_value())
    client = ProviderClient(providers.configure(), idempotent=settings.idempotent,
                            timeout_seconds=settings.http_timeout_seconds, max_in_flight=settings.max_in_flight)
    store = RedisRecordStore(redis, settings.dedupe_ttl_seconds, on_error=metrics.redis_errors.inc)
    clients = KafkaClients(KafkaClientConfig.from_settings(settings, "apiplus-dispatch"))
    loop = LoopStore(redis, LoopSettings(settings.sent_map_ttl_seconds, settings.offer_window_seconds,
                                         settings.echo_window_seconds, settings.echo_poll_seconds),
                     call=store._retrying, batcher=store.batcher) if settings.loop_enabled else None
    dispatcher = Dispatcher(settings, clients, store, client, metrics, loop=loop, trace=stagetrace.from_env())
    workers: list[Any] = [dispatcher]
    if settings.loop_enabled:
        workers.append(build_receipts(settings, clients, redis, metrics))

    async def ready() -> dict[str, bool]:
        return {"kafka": all(w.is_ready() for w in workers), "redis": await redisio.ping(redis)}

    tune_gc()
    return serve(workers, registry=registry, ready=ready, http_host=settings.http_host,
                 http_port=settings.http_port, on_stop=redis.aclose, ready_gauge=metrics.worker.ready)


def child_env(index: int, base_port: int) -> dict[str, str]:
    """Process `index` of several: one worker, its own health and metrics port (any free one if the base is 0)."""
    return {**os.environ, "APIPLUS_DISPATCH_PROCESSES": "1",
            "APIPLUS_DISPATCH_HTTP_PORT": str(base_port + index if base_port else 0)}


def supervise(processes: int, base_port: int, argv: list[str] | None = None) -> int:
    """`processes` dispatch workers in one consumer group. SIGTERM/SIGINT go to every one; when one
    exits, the others are stopped too (gracefully), so a supervisor above restarts the whole set.
    The exit status is the first non-zero one."""
    command = argv or [sys.executable, "-m", "services.cli", "dispatch", "run"]
    children = [subprocess.Popen(command, env=child_env(i, base_port))  # noqa: S603 (our interpreter, our module)
                for i in range(processes)]

    def forward(signum: int, _: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    status = 0
    while children:
        for child in list(children):
            code = child.poll()
            if code is None:
                continue
            children.remove(child)
            if code != 0 and status == 0:
                status = code
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return status


def _render(args: argparse.Namespace) -> int:
    def process(line: bytes) -> Iterator[dict[str, Any]]:
        command = parse_command(parse_object(line))
        channel = Channel(channel_id=command.channel_id, tenant_id="", token_sha256="", provider=args.provider,
                          mode=args.mode, status="active")
        request = render_command(command, channel)
        return iter([{"command_id": command.command_id, **request.as_dict()}])

    def context(line: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            return {}
        if isinstance(value, dict) and isinstance(value.get("command_id"), str):
            return {"command_id": value["command_id"]}
        return {}

    return run_jsonl(process, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer, context=context,
                     with_field=True)


def _simulator(args: argparse.Namespace) -> int:
    setup_logging("simulator")
    loop = GatewayLoop(args.kafka_bootstrap, args.raw_topic, args.instance) if args.kafka_bootstrap else None
    asyncio.run(serve_simulator(args.host, args.port, Path(args.log), args.latency_ms, loop))
    return 0
