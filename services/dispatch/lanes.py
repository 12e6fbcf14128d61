"""Lanes: one queue per channel, each worked in order by its own task, finished out of partition order.

A lane holds its commands while the channel is not open (each reports `held` once), waits out its
pacing gap, expires what waited too long, and hands the head command to delivery. A paced or held
channel never delays another; the offsets below the oldest unfinished command are what gets committed
(commits.py), so a crash redelivers only unfinished work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from apiplus.clock import Clock
from services.dispatch.core import Channel
from services.dispatch.delivery import Delivery
from services.dispatch.holding import expiry
from services.dispatch.job import Job
from services.dispatch.outcome import QUEUE_FULL, ResultState
from services.dispatch.pacing import Pacer
from services.dispatch.providers import PacingRule
from services.dispatch.results import Outputs

PACER_SWEEP_SECONDS = 60.0


@dataclass
class Lane:
    channel_id: str
    pacer: Pacer  # outlives the lane: a channel whose queue empties is still paced
    jobs: collections.deque[Job] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # clear while a send is in progress
    task: asyncio.Task[None] | None = None
    waiting: str | None = None  # "held" | "paced" while the lane waits

    def __post_init__(self) -> None:
        self.idle.set()


@dataclass(frozen=True)
class LaneRules:
    is_open: Callable[[str], bool]  # channel id -> may it send now
    pacing: Callable[[Channel], PacingRule] | None  # None: pacing disabled
    max_queue: int
    drain_timeout: float  # seconds a send in progress may take to finish when its partition is revoked
    draw: Callable[[], float]  # a random number in [0, 1) for pacing jitter


class Lanes:
    def __init__(self, *, delivery: Delivery, outputs: Outputs, clock: Clock, rules: LaneRules) -> None:
        self.delivery = delivery
        self.outputs = outputs
        self.clock = clock
        self.rules = rules
        self.lanes: dict[str, Lane] = {}
        self.pacers: dict[str, Pacer] = {}
        self.buffered = 0
        self.stopping = asyncio.Event()
        self._swept = float("-inf")

    async def add(self, job: Job) -> None:
        lane = self.lanes.get(job.channel_id)
        if lane is None:
            pacer = self.pacers.setdefault(job.channel_id, Pacer())
            lane = self.lanes[job.channel_id] = Lane(job.channel_id, pacer)
        if len(lane.jobs) >= self.rules.max_queue:
            await self.delivery.end_unsent(job, ResultState.EXPIRED, QUEUE_FULL)
            return
        lane.jobs.append(job)
        self.buffered += 1
        if job.retry_round == 0 and not job.queued_reported:
            job.queued_reported = True
            self.outputs.progress(job.tp, job.offset, job.command_id, job.channel_id, ResultState.QUEUED)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._work(lane), name="lane")
        else:
            lane.wake.set()

    def wake(self, channel_id: str) -> None:
        """Something the lane waits on changed (the channel's health)."""
        lane = self.lanes.get(channel_id)
        if lane is not None:
            lane.wake.set()

    async def _work(self, lane: Lane) -> None:
        while lane.jobs and not self.stopping.is_set():
            job = lane.jobs[0]
            now = self.clock.time()
            if self.delivery.finished_here(job):  # a copy earlier in this lane finished it
                self._pop(lane)
                self.delivery.skip(job)
                continue
            expired = expiry(job.deadlines, now)
            if expired is not None:
                self._pop(lane)
                await self.delivery.end_unsent(job, ResultState.EXPIRED, expired)
                continue
            if not self.rules.is_open(lane.channel_id):
                self._report_held(lane)
                await self._wait(lane, "held", job.deadlines.hold_until - now)
                continue
            delay = self._delay(lane, job, now)
            if delay > 0:
                await self._wait(lane, "paced", delay)
                continue
            lane.idle.clear()
            try:
                await self.delivery.deliver(job)
            finally:
                lane.idle.set()
            self._pop(lane)
            if self.rules.pacing is not None:
                lane.pacer.sent(self.rules.pacing(job.channel), job.command.to, self.clock.time(), self.rules.draw())
        if not lane.jobs and self.lanes.get(lane.channel_id) is lane:
            del self.lanes[lane.channel_id]

    def _pop(self, lane: Lane) -> None:
        lane.jobs.popleft()
        self.buffered -= 1

    def _delay(self, lane: Lane, job: Job, now: float) -> float:
        wait = max(0.0, job.not_before - now)
        if self.rules.pacing is None:
            return wait
        return max(wait, lane.pacer.delay(self.rules.pacing(job.channel), job.command.to, now))

    def _report_held(self, lane: Lane) -> None:
        for waiting in list(lane.jobs):
            if not waiting.held_reported:
                waiting.held_reported = True
                self.outputs.progress(waiting.tp, waiting.offset, waiting.command_id, waiting.channel_id,
                                      ResultState.HELD)

    async def _wait(self, lane: Lane, why: str, seconds: float) -> None:
        lane.waiting = why
        lane.wake.clear()
        await self.clock.wait(lane.wake, seconds)
        lane.waiting = None

    async def drain(self, tps: Iterable[TopicPartition]) -> None:
        """Give up partitions: let sends in progress finish, drop what has not started."""
        revoked = set(tps)
        for channel_id, lane in list(self.lanes.items()):
            if not any(job.tp in revoked for job in lane.jobs):
                continue
            await self.clock.wait(lane.idle, self.rules.drain_timeout)
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lane.task
            kept = collections.deque(job for job in lane.jobs if job.tp not in revoked)
            self.buffered -= len(lane.jobs) - len(kept)
            lane.jobs = kept
            if kept:
                lane.task = asyncio.create_task(self._work(lane), name="lane")
            else:
                self.lanes.pop(channel_id, None)

    def forget_idle_pacers(self) -> None:
        """Drop what pacing no longer needs to remember. A pacer stays needed for up to an hour after its last
        send, so one sweep a minute is enough; a sweep visits every channel sent to in the last hour."""
        now = self.clock.time()
        if now - self._swept < PACER_SWEEP_SECONDS:
            return
        self._swept = now
        self.pacers = {c: p for c, p in self.pacers.items() if c in self.lanes or not p.idle(now)}

    def counts(self) -> tuple[int, int, int]:
        """(queued commands, held commands, paced channels)."""
        queued = held = paced = 0
        for lane in self.lanes.values():
            queued += len(lane.jobs)
            if lane.waiting == "held":
                held += len(lane.jobs)
            elif lane.waiting == "paced":
                paced += 1
        return queued, held, paced
