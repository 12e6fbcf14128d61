"""The latency phase of `make bench`, alternating between settings on one broker: which setting moves the tail.

    APIPLUS_PROFILE=bench bash deploy/with-infra.sh .venv/bin/python -m bench.latency_ab \
        --rate 1800 --rounds 3 - APIPLUS_DISPATCH_COMMIT_INTERVAL_SECONDS=0.1

Each variant is a set of environment variables for the worker (`NAME=VALUE`, several joined by `;`; `-` for the
defaults); every round runs each variant once, in turn, so that the machine's drift falls on all of them alike.
The first run after the broker starts is slower than the rest (its JVM still compiling): compare from round 2,
or pass `--warm-up` for one untimed run first. Each run prints what the full bench prints for a latency run.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import uvloop

from bench import run as bench


def parse_variant(text: str) -> dict[str, str]:
    """`-` -> {}; `A=1;B=2` -> {"A": "1", "B": "2"}."""
    if text == "-":
        return {}
    variant = {}
    for part in filter(None, text.split(";")):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"not NAME=VALUE: {part!r}")
        variant[name] = value
    return variant


def line(name: str, r: dict[str, Any]) -> str:
    return (f"{name}: {r['rate']:,.0f}/s, {r['cpu_us_per_command']:.0f} cpu us/command, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, p99.9 {r['p999_ms']:.1f} ms; produced -> readable p99 "
            f"{r.get('broker_p99_ms', float('nan')):.1f} ms; {bench.diagnosis_line(r)}")


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, required=True, help="commands per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-up", action="store_true", help="one untimed run at the rate first")
    parser.add_argument("variants", nargs="+", type=parse_variant, help="NAME=VALUE[;NAME=VALUE...] or -")
    args = parser.parse_args(argv)
    logs = bench.ROOT / ".cache" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    await bench.load_registry()
    if args.warm_up:
        await bench.bench_latency(args.rate, logs)
    base = dict(os.environ)
    for round_ in range(1, args.rounds + 1):
        for variant in args.variants:
            os.environ.clear()
            os.environ.update({**base, **variant})
            try:
                result = await bench.bench_latency(args.rate, logs)
            finally:
                os.environ.clear()
                os.environ.update(base)
            name = ";".join(f"{k}={v}" for k, v in variant.items()) or "defaults"
            print(f"round {round_}, {line(name, result)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(uvloop.run(main()))  # as bench.run: the workers' loop
