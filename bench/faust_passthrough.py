"""The same pass-through as bench/baseline.py, as a faust-streaming agent, to weigh faust with numbers.

BENCH_BOOTSTRAP=... BENCH_INPUT=... BENCH_OUTPUT=... BENCH_GROUP=... python -m bench.faust_passthrough worker -l warn
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import faust

app = faust.App(
    os.environ.get("BENCH_GROUP", "bench-faust"),
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP', '127.0.0.1:24092')}",
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    producer_linger_ms=5,
    broker_max_poll_records=500,
    topic_partitions=6,
    topic_allow_declare=False,
)
source = app.topic(os.environ.get("BENCH_INPUT", "in"), key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ.get("BENCH_OUTPUT", "out"), key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def passthrough(stream: Any) -> AsyncIterator[None]:
    async for key, value in stream.items():
        await sink.send(key=key, value=value)
        yield None


if __name__ == "__main__":
    app.main()
