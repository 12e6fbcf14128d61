"""When a worker's consumer fetched: `python -m bench.fetchtrace <file> <module> [args...]` runs `<module>` as
`python -m` would, with aiokafka's fetcher timed, and appends a line per fetch request to `<file>`: the first
topic it asks for, and the wall-clock seconds it was sent and its records were handed over.

The latency phase of `make bench` uses it with `BENCH_FETCH_TRACE=1` (bench/run.py, `fetch_cycle`): the
worker's fetch cycle, split into the fetch itself and the gap until the next one starts. A benchmark tool
only: it wraps a private method of aiokafka's `Fetcher`, which a release may rename (it then fails at start,
loudly). Its lines are written as the stage trace's are (`LineFile`), whole lines per write.
"""

from __future__ import annotations

import atexit
import runpy
import sys
import time
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

from services.dispatch.stagetrace import LineFile

LINES_PER_WRITE = 200


def install(path: str) -> None:
    out = LineFile(path, LINES_PER_WRITE)
    original = Fetcher._proc_fetch_request

    async def timed(self: Any, assignment: Any, node_id: int, request: Any) -> Any:
        sent = time.time()
        result = await original(self, assignment, node_id, request)
        topic = request.topics[0][0] if request.topics else "-"
        out.append(f"{topic}\t{sent:.6f}\t{time.time():.6f}\n")
        return result

    Fetcher._proc_fetch_request = timed  # type: ignore[method-assign]
    atexit.register(out.close)


def main() -> None:
    path, module, *args = sys.argv[1:]
    install(path)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
