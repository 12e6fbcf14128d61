"""The event loop probe: lag, stalls split into running and waiting for a CPU, collector pauses."""

from __future__ import annotations

import asyncio
import gc
import time

from prometheus_client import CollectorRegistry

from apiplus.loopprobe import PROBE_SECONDS, LoopProbe


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_stall_is_split_into_the_time_running_and_the_time_waiting_for_a_cpu() -> None:
    registry = CollectorRegistry()
    probe = LoopProbe(registry)
    probe.observe(0.005, 0.004)  # late, but not a stall
    probe.observe(0.100, 0.030)  # 30 ms of it ran, 70 ms the process waited
    probe.observe(0.050, 0.200)  # a long callback: the whole stall ran (CPU beyond the lag counts once)
    assert _value(registry, "apiplus_event_loop_lag_seconds_count") == 3
    assert _value(registry, "apiplus_event_loop_lag_seconds_bucket", le="0.005") == 1
    assert abs(_value(registry, "apiplus_event_loop_stalled_seconds_total", cpu="running") - 0.080) < 1e-9
    assert abs(_value(registry, "apiplus_event_loop_stalled_seconds_total", cpu="waiting") - 0.070) < 1e-9


async def test_a_callback_that_blocks_the_loop_shows_as_a_running_stall_and_a_collection_as_a_pause() -> None:
    registry = CollectorRegistry()
    probe = asyncio.create_task(LoopProbe(registry).run())
    await asyncio.sleep(2 * PROBE_SECONDS)
    deadline = time.thread_time() + 0.15
    while time.thread_time() < deadline:  # 150 ms of CPU without yielding
        pass
    gc.collect()
    await asyncio.sleep(2 * PROBE_SECONDS)
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    running = _value(registry, "apiplus_event_loop_stalled_seconds_total", cpu="running")
    assert running >= 0.1
    assert _value(registry, "apiplus_event_loop_lag_seconds_sum") >= running
    assert _value(registry, "apiplus_gc_pause_seconds_count", generation="2") >= 1
    assert probe.cancelled()
    assert all(getattr(cb, "__self__", None) is None or not isinstance(cb.__self__, LoopProbe)
               for cb in gc.callbacks)  # removed when the probe stops
