"""Summarise py-spy's raw (collapsed) stacks: where a worker's samples went, by function and by package.

    .venv/bin/python -m bench.stacktop STACKS [--top N]

`make bench` writes one for the latency phase's dispatch worker when BENCH_PYSPY=dispatch-latency
(`.cache/bench/dispatch-latency-<run>.pyspy`: the timed load only, sampled 100 times a second). Prints the
share of samples per package (the innermost frame's file), and the top N functions by own samples
(innermost frame) and by samples anywhere on the stack.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Iterable, Sequence

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
PACKAGES = ("apiplus", "services", "aiokafka", "aiohttp", "redis", "asyncio", "orjson", "prometheus_client",
            "multidict", "yarl", "selectors", "ssl", "logging")


def frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        match = FRAME.match(frame)
        out.append((match["function"], match["file"]) if match else (frame, ""))
    return out


def package(file: str) -> str:
    parts = re.split(r"[/\\]", file)
    for name in PACKAGES:
        if name in parts:
            return name
    return "other" if file else "(idle or native)"


def summarise(lines: Iterable[str], top: int) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        parsed = frames(stack)
        function, file = parsed[-1]
        own[f"{function} ({file})"] += n
        packages[package(file)] += n
        for name in {f"{f} ({p})" for f, p in parsed}:
            anywhere[name] += n
    if not total:
        return ["no samples"]
    out = [f"{total} samples"]
    out += ["", "by package (innermost frame):"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in packages.most_common()]
    out += ["", f"top {top} by own samples:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    out += ["", f"top {top} anywhere on the stack:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in anywhere.most_common(top)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("stacks")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    with open(args.stacks, encoding="utf-8", errors="replace") as f:
        print("\n".join(summarise(f, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
