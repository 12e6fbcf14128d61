"""ingest's own per-record work, without Kafka or Redis: CPU µs per raw record (normalise) and per event (health).

    PYTHONPATH=. .venv/bin/python -m bench.ingest_micro [RECORDS] [--profile]

The bench's own raw records (bench/data.py `ingest_events`), normalised, checked against the schemas and
encoded as the worker does (`normalize_record`, `orjson.dumps`); the events then folded into health as
the health stage does (parse, `observe`, the batch's changed channels encoded for the changelog). Best
of five passes of CPU time (`time.process_time`), so a busy machine moves it less than a wall clock would.
`--profile` prints cProfile's top functions of one more pass.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from apiplus.decode import parse_object
from apiplus.schemas import validate
from bench import data
from services.ingest.common import Context
from services.ingest.health import ChannelHealth, HealthRules, observe
from services.ingest.worker import normalize_record

MAX_BYTES = 512 * 1024
RECEIVED_AT_MS = 1_764_234_000_000
HEALTH_BATCH = 400  # about what one partition's batch holds in the bench


def best_us(work: Callable[[], Any], count: int, passes: int = 5) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return 1e6 * best / count


def main(argv: list[str]) -> None:
    records = int(next((a for a in argv if a.isdigit()), "20000"))
    raw = [value for _, value in data.ingest_events(records, max(records // 2, 1))]
    ctx = Context(received_at_ms=RECEIVED_AT_MS)
    events = [e for value in raw for e in normalize_record(value, ctx, MAX_BYTES).events]
    encoded = [orjson.dumps(e) for e in events]
    rules = HealthRules()

    def normalise() -> None:
        for value in raw:
            outcome = normalize_record(value, Context(received_at_ms=RECEIVED_AT_MS), MAX_BYTES)
            for event in outcome.events:
                orjson.dumps(event)

    def check() -> None:
        for event in events:
            validate(event["type"], event)

    def health() -> None:
        table: dict[str, ChannelHealth] = {}
        for start in range(0, len(encoded), HEALTH_BATCH):
            changed: dict[str, ChannelHealth] = {}
            for value in encoded[start:start + HEALTH_BATCH]:
                event = parse_object(value)
                before = changed.get(event["channel_id"]) or table.get(event["channel_id"])
                after, change = observe(before, event, rules)
                if after != before:
                    changed[after.channel_id] = after
                if change is not None:
                    orjson.dumps(change)
            for channel_id, state in changed.items():
                state.encode()
                table[channel_id] = state

    print(f"{len(raw)} raw records, {len(events)} events")
    print(f"normalise + validate + encode: {best_us(normalise, len(raw)):6.1f} us/record")
    print(f"  of which validate:            {best_us(check, len(raw)):6.1f} us/record")
    print(f"health (parse, observe, encode): {best_us(health, len(events)):6.1f} us/event")
    if "--profile" in argv:
        profile = cProfile.Profile()
        profile.enable()
        normalise()
        health()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main(sys.argv[1:])
