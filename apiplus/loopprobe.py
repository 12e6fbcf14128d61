"""The event loop's own health, in every worker: how late it runs a timer, why, and the garbage collector's pauses.

A worker is one thread running one event loop, so everything it does waits while a callback runs long, while
the collector pauses it, or while the machine gives the process no CPU. The probe asks to be woken every
20 ms and records how late it was (`apiplus_event_loop_lag_seconds`). A lag over 20 ms is a stall; the
thread's CPU time over that wait says how much of the stall the process was running (one long callback or a
long queue of them) and how much it was waiting for a CPU (the machine busy with other processes):
`apiplus_event_loop_stalled_seconds_total{cpu="running"|"waiting"}`. Collector pauses, by generation:
`apiplus_gc_pause_seconds`. The probe costs ~50 wake-ups a second.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from apiplus.metrics import LATENCY_BUCKETS

PROBE_SECONDS = 0.02
STALL_SECONDS = 0.02  # a lag above this is a stall, attributed to running or waiting


class LoopProbe:
    def __init__(self, registry: CollectorRegistry, *, wall: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.wall = wall
        self.cpu = cpu
        self.lag = Histogram("apiplus_event_loop_lag_seconds",
                             "How late the event loop ran a timer due every 20 ms.", registry=registry,
                             buckets=LATENCY_BUCKETS)
        self.stalled = Counter("apiplus_event_loop_stalled_seconds_total",
                               "Time the event loop ran over 20 ms late, by whether the process was running "
                               "(long or many callbacks) or waiting for a CPU (the machine busy).", ["cpu"],
                               registry=registry)
        self.gc_pause = Histogram("apiplus_gc_pause_seconds", "Garbage collector pauses, by generation.",
                                  ["generation"], registry=registry, buckets=LATENCY_BUCKETS)
        self._gc_started = 0.0

    def observe(self, lag: float, cpu_used: float) -> None:
        """One probe: `lag` seconds late, `cpu_used` seconds of this thread's CPU since it went to sleep."""
        self.lag.observe(lag)
        if lag > STALL_SECONDS:
            running = min(lag, cpu_used)
            self.stalled.labels(cpu="running").inc(running)
            self.stalled.labels(cpu="waiting").inc(lag - running)

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = self.wall()
        else:
            self.gc_pause.labels(generation=str(info["generation"])).observe(self.wall() - self._gc_started)

    async def run(self) -> None:
        gc.callbacks.append(self.on_gc)
        try:
            while True:
                wall, cpu = self.wall(), self.cpu()
                await asyncio.sleep(PROBE_SECONDS)
                self.observe(max(0.0, self.wall() - wall - PROBE_SECONDS), self.cpu() - cpu)
        finally:
            gc.callbacks.remove(self.on_gc)
