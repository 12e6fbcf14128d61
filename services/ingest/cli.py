"""ingest: run the worker, serve the webhook ingress, or normalise raw gateway payloads offline."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from apiplus import redisio
from apiplus.decode import DEFAULT_MAX_BYTES
from apiplus.envelope import parse_rfc3339
from apiplus.jsonlog import setup_logging
from apiplus.offline import StderrLine, run_jsonl
from apiplus.runtime import serve, tune_gc
from apiplus.settings import load_settings
from services.ingest import webhook
from services.ingest.common import valid_zone
from services.ingest.core import DIALECTS, Context, Outcome
from services.ingest.settings import IngestSettings
from services.ingest.worker import build, normalize_record


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="normalise raw topics and track channel health").set_defaults(func=_run)
    n = commands.add_parser("normalize", help="raw payloads (JSONL) on stdin -> canonical events on stdout")
    n.add_argument("--dialect", choices=DIALECTS, help="force the dialect instead of detecting it")
    n.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    n.add_argument("--now", type=_moment, metavar="RFC3339",
                   help="the time of reading, for events that carry no time (default: the clock)")
    n.add_argument("--evolution-clock", default="receipt", type=_clock, metavar="receipt|utc|ZONE",
                   help="how to read Evolution's date_time (default: receipt, i.e. the time of reading)")
    n.set_defaults(func=_normalize)
    commands.add_parser("webhook", help="receive the gateways' webhooks over HTTP onto the raw topic").set_defaults(
        func=_webhook)


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

    tune_gc()
    return serve([normalise, health], registry=registry, ready=ready, http_host=settings.http_host,
                 http_port=settings.http_port, on_stop=redis.aclose, ready_gauge=normalise.metrics.ready)


def _moment(value: str) -> int:
    try:
        return int(parse_rfc3339(value).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time with a zone: {value!r}") from None


def _clock(value: str) -> str:
    if value in ("receipt", "utc") or valid_zone(value):
        return value
    raise argparse.ArgumentTypeError(f"not receipt, utc or an IANA time zone: {value!r}")


def outcome_lines(outcome: Outcome) -> Iterator[dict[str, Any]]:
    """Events for stdout; an `ignored` or `error` line on stderr for each thing that is not an event."""
    yield from outcome.events
    for ignored in outcome.ignored:
        note: dict[str, Any] = {"reason": ignored.reason}
        if ignored.detail is not None:
            note["detail"] = ignored.detail
        yield StderrLine(ignored=note)
    for error in outcome.errors:
        yield StderrLine(error={"code": str(error.code), "message": error.message})


def _normalize(args: argparse.Namespace) -> int:
    def process(line: bytes) -> Iterator[dict[str, Any]]:
        now = args.now if args.now is not None else int(time.time() * 1000)
        ctx = Context(dialect=args.dialect, received_at_ms=now, evolution_clock=args.evolution_clock)
        return outcome_lines(normalize_record(line, ctx, args.max_bytes))

    return run_jsonl(process, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer)


def _webhook(_: argparse.Namespace) -> int:
    return webhook.main()
