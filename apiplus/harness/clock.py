"""A clock that moves only when the test says so: `ManualClock` (satisfies `apiplus.clock.Clock`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")
SETTLE_ROUNDS = 64  # loop iterations that let woken tasks run before time moves again
DEFAULT_EPOCH = 1_795_000_000.0  # 2026-11-18T..Z: a fixed wall-clock start, so ids and timestamps repeat


class ClockStuck(RuntimeError):
    """`run` found the awaited work waiting on something that no timer will ever release."""


class ManualClock:
    """Virtual time. `time()` = `start + elapsed`, `monotonic()` = `elapsed`; `sleep` and `wait` park
    the caller on a timer that fires only when `advance` (or `run`) moves time past its deadline.
    Timers fire in deadline order (ties: creation order), each followed by a settle of the loop."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self.start = start
        self._elapsed = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    # --- the Clock protocol ------------------------------------------------------------------
    def time(self) -> float:
        return self.start + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self._timer(seconds)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set() or seconds <= 0:
            await asyncio.sleep(0)
            return event.is_set()
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        timer: asyncio.Future[Any] = self._timer(seconds)
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
        return event.is_set()

    # --- driving time ------------------------------------------------------------------------
    @property
    def next_deadline(self) -> float | None:
        """Elapsed time at which the earliest live timer fires; None when no one waits on the clock."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    async def settle(self, rounds: int = SETTLE_ROUNDS) -> None:
        """Let every task that can run without time passing run."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing due timers in order and settling after each."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        target = self._elapsed + seconds
        await self.settle()
        while (deadline := self.next_deadline) is not None and deadline <= target:
            _, _, future = heapq.heappop(self._timers)
            self._elapsed = max(self._elapsed, deadline)
            future.set_result(None)
            await self.settle()
        self._elapsed = target
        await self.settle()

    async def run(self, work: Awaitable[T], *, limit: float = 24 * 3600.0) -> T:
        """Await `work`, jumping time to the next timer whenever it cannot progress otherwise.

        Raises `ClockStuck` when it waits with no timer pending, and when more than `limit`
        seconds of virtual time would pass.
        """
        task = asyncio.ensure_future(work)
        began = self._elapsed
        while True:
            await self.settle()
            if task.done():
                return task.result()
            deadline = self.next_deadline
            if deadline is None:
                task.cancel()
                raise ClockStuck("the work waits on something other than the clock")
            if deadline - began > limit:
                task.cancel()
                raise ClockStuck(f"the work did not finish within {limit} s of virtual time")
            await self.advance(deadline - self._elapsed)

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._elapsed + seconds, next(self._seq), future))
        return future

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)
