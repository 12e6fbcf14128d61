"""When a worker's consumer fetched: `python -m bench.fetchtrace <file> <module> [args...]` runs `<module>` as
`python -m` would, with aiokafka's fetcher timed, and appends a line per fetch request to `<file>`: the first
topic it asks for, and the wall-clock seconds it was sent and its records were handed over.

The latency phase of `make bench` uses it with `BENCH_FETCH_TRACE=1` (bench/run.py): the worker's fetch cycle,
split into the fetch itself and the gap until the next one starts. A benchmark tool only: it wraps a private
method of aiokafka's `Fetcher`, which a release may rename (it then fails at start, loudly).
"""

from __future__ import annotations

import atexit
import itertools
import os
import runpy
import sys
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

LINES_PER_WRITE = 200


def install(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    lines: list[str] = []
    original = Fetcher._proc_fetch_request

    def flush() -> None:
        data = memoryview("".join(lines).encode())
        lines.clear()
        while data:
            data = data[os.write(fd, data):]

    async def timed(self: Any, assignment: Any, node_id: int, request: Any) -> Any:
        sent = time.time()
        result = await original(self, assignment, node_id, request)
        topic = request.topics[0][0] if request.topics else "-"
        lines.append(f"{topic}\t{sent:.6f}\t{time.time():.6f}\n")
        if len(lines) >= LINES_PER_WRITE:
            flush()
        return result

    Fetcher._proc_fetch_request = timed  # type: ignore[method-assign]
    atexit.register(flush)


def cycle(trace: str, topic: str, start: float, end: float) -> dict[str, float]:
    """The fetches of `topic` sent between `start` and `end`: how long each took (`fetch_*`) and the gap from its
    end to the next one's start (`gap_*`), in ms. Empty without two such fetches."""
    from bench.run import percentiles  # here: bench.run imports this module
    fetches = sorted(
        (float(sent), float(done)) for name, sent, done in _rows(trace.splitlines())
        if name == topic and start <= float(sent) <= end)
    if len(fetches) < 2:
        return {}
    took = percentiles([1000 * (done - sent) for sent, done in fetches])
    gaps = percentiles([1000 * (b[0] - a[1]) for a, b in itertools.pairwise(fetches)])
    return {"fetches": len(fetches), **{f"fetch_{k}": v for k, v in took.items()},
            **{f"gap_{k}": v for k, v in gaps.items()}}


def _rows(lines: Iterable[str]) -> Iterable[tuple[str, str, str]]:
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]


def main() -> None:
    path, module, *args = sys.argv[1:]
    install(path)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
