"""billing: run the worker, quote a number of channels, or replay lifecycle events offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from apiplus.jsonlog import setup_logging
from apiplus.offline import run_jsonl
from apiplus.runtime import serve
from apiplus.settings import load_settings
from services.billing.core import BillingRules, TenantState, apply
from services.billing.pricing import DEFAULT_CATALOG, Catalog, quote
from services.billing.settings import BillingSettings
from services.billing.worker import build, parse_input


def register(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="consume lifecycle events and write the invoice topic").set_defaults(func=_run)
    q = commands.add_parser("quote", help="print the price of N paid channels as JSON")
    q.add_argument("channels", type=int)
    q.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    q.set_defaults(func=_quote)
    r = commands.add_parser("replay", help="lifecycle events (JSONL) on stdin -> billing events on stdout")
    r.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    r.add_argument("--notice-days", type=int, default=10)
    r.set_defaults(func=_replay)


def _run(_: argparse.Namespace) -> int:
    settings = load_settings(BillingSettings)
    setup_logging("billing", settings.log_level, settings.kafka_log_level)
    registry = CollectorRegistry()
    processor = build(settings, registry)

    async def ready() -> dict[str, bool]:
        return {"kafka": processor.is_ready()}

    return serve([processor], registry=registry, ready=ready, http_host=settings.http_host,
                 http_port=settings.http_port, ready_gauge=processor.metrics.ready)


def _quote(args: argparse.Namespace) -> int:
    if args.channels < 0:
        sys.stderr.write("apiplus billing quote: N must be zero or more\n")
        return 2
    sys.stdout.buffer.write(orjson.dumps(quote(Catalog.load(args.catalog), args.channels).as_dict()) + b"\n")
    return 0


def _replay(args: argparse.Namespace) -> int:
    rules = BillingRules(catalog=Catalog.load(args.catalog), notice_days=args.notice_days)
    tenants: dict[str, TenantState] = {}

    def process(line: bytes) -> Iterator[dict[str, Any]]:
        event = parse_input(line)
        new, out = apply(tenants.get(event["tenant_id"]), event, rules)
        if new is not None:
            tenants[event["tenant_id"]] = new
        return iter(out)

    return run_jsonl(process, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer)
