"""billing's own CPU per event, without Kafka: the worker's handler and the changelog encode on the bench's
lifecycle backlog, in batches of 5 000 like a catch-up poll. Prints the lowest and the median of several
passes (process CPU time), so that code changes can be compared on a busy machine.

python -m bench.billing_core [TENANTS] [PASSES]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry

from apiplus.state import PartitionState
from bench import data
from services.billing.core import BillingRules, TenantState
from services.billing.metrics import BillingMetrics
from services.billing.pricing import Catalog
from services.billing.settings import BillingSettings
from services.billing.worker import BillingHandler

BATCH = 5000


class _Record(NamedTuple):
    key: bytes
    value: bytes
    topic: str
    partition: int
    offset: int


async def one_pass(handler: BillingHandler, records: list[_Record]) -> int:
    """Every record through the handler, each batch's changed tenants encoded once; the outputs made."""
    state = PartitionState(0)
    outputs = 0
    for start in range(0, len(records), BATCH):
        for record in records[start:start + BATCH]:
            outputs += len(await handler.handle(record, state))
        for value in state.pending().values():
            TenantState.encode(value)
        state.commit()
    return outputs


def main(tenants: int = 2000, passes: int = 9) -> None:
    records = [_Record(k, v, "lifecycle", 0, i) for i, (k, v) in enumerate(data.billing_events(tenants, 10))]
    settings = BillingSettings(kafka_bootstrap="unused:9092", redis_url="redis://unused")
    seconds: list[float] = []
    outputs: Any = None
    for _ in range(passes):
        handler = BillingHandler(settings, BillingRules(Catalog.load(settings.catalog_path)),
                                 BillingMetrics(CollectorRegistry()))
        started = time.process_time()
        outputs = asyncio.run(one_pass(handler, records))
        seconds.append(time.process_time() - started)
    per_event = [1e6 * s / len(records) for s in seconds]
    print(f"billing core: {len(records)} events, {outputs} outputs, CPU per event min {min(per_event):.1f} µs, "
          f"median {statistics.median(per_event):.1f} µs ({passes} passes)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
