"""ingest: run the worker, or normalise raw gateway payloads offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from apiplus import redisio
from apiplus.decode import DEFAULT_MAX_BYTES
from apiplus.jsonlog import setup_logging
from apiplus.offline import run_jsonl
from apiplus.runtime import serve
from apiplus.settings import load_settings
from services.ingest.core import DIALECTS, Context
from services.ingest.settings import IngestSettings
from services.ingest.worker import build, normalize_record


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="normalise raw topics and track channel health").set_defaults(func=_run)
    n = commands.add_parser("normalize", help="raw payloads (JSONL) on stdin -> canonical events on stdout")
    n.add_argument("--dialect", choices=DIALECTS, help="force the dialect instead of detecting it")
    n.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    n.set_defaults(func=_normalize)


def _run(_: argparse.Namespace) -> int:
    settings = load_settings(IngestSettings)
    setup_logging("ingest", settings.log_level, settings.kafka_log_level)
    registry = CollectorRegistry()
    redis = redisio.connect(settings.redis_url.get_secret_value())
    normalise, health = build(settings, registry, redis)

    async def ready() -> dict[str, bool]:
        return {
            "kafka": normalise.is_ready() and health.is_ready(),
            "redis": await redisio.ping(redis),
        }

    return serve([normalise, health], registry=registry, ready=ready, http_host=settings.http_host,
                 http_port=settings.http_port, on_stop=redis.aclose, ready_gauge=normalise.metrics.ready)


def _normalize(args: argparse.Namespace) -> int:
    ctx = Context(dialect=args.dialect)

    def process(line: bytes) -> Iterator[dict[str, Any]]:
        return iter(normalize_record(line, ctx, args.max_bytes))

    return run_jsonl(process, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer)
