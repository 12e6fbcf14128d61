"""The clock every loop reads, passed in so that tests can drive time (apiplus.harness.ManualClock).

Pure cores take `now` as an argument; shells ask a `Clock`. Three kinds of time:
- `time()`: wall-clock epoch seconds, for timestamps and timers that follow the calendar;
- `monotonic()`: for intervals (readiness, durations), never stepped backwards;
- `sleep(seconds)` and `wait(event, seconds)`: the only ways a loop waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock time, epoch seconds."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; only differences mean anything."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (zero or less: just yield)."""

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until `event` is set or `seconds` pass; True when the event is set."""


class SystemClock:
    """The real clock: `time.time`, `time.monotonic`, `asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
        return event.is_set()


SYSTEM_CLOCK = SystemClock()
