"""The send step of one job: at most one provider call per command, then its one terminal result.

Retries in place with capped exponential backoff (honouring Retry-After), then parks the command in
the retry topic, then dead-letters it. The send record (record.py) is written before every request.

With the closed loop (loopstore.py, docs/loop.md): a command that ends `sent` is remembered in the
sent map (and its offer, when degraded to numbered text); a send whose outcome is unknown on a provider
without idempotency keys waits, off its lane, for the gateway's echo before it ends `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition

from apiplus.backoff import Backoff
from apiplus.clock import Clock
from apiplus.dlq import SourceRecord
from apiplus.errors import ErrorCode, PermanentError
from apiplus.kafka import Output
from services.dispatch.commits import Commits
from services.dispatch.core import Channel, Command
from services.dispatch.job import Job
from services.dispatch.loop import EchoWaitInterrupted
from services.dispatch.metrics import DELIVERY, DispatchMetrics
from services.dispatch.outcome import DELIVERY_UNKNOWN, Failure, ResultState
from services.dispatch.providers import Request
from services.dispatch.record import SendState, done, retrying, sending, sent
from services.dispatch.results import Outputs
from services.dispatch.sender import SendFailed, SendUnavailable
from services.dispatch.stagetrace import StageTrace
from services.dispatch.store import SendRecords


class Loop(Protocol):
    """The closed loop's Redis side (loopstore.LoopStore)."""

    async def remember(self, command: Command, channel: Channel, message_id: str,
                       resolved_by: str | None = None) -> None: ...

    async def await_echo(self, command: Command, channel: Channel, attempt_at: float,
                         stopping: Callable[[], bool] = ...) -> str | None:
        """The echoed message id, None when the window closed; raises EchoWaitInterrupted when stopping."""


Sender = Callable[[str, Request, str], Awaitable[tuple[str, float]]]  # (provider, request, key) -> (id, s)


@dataclass(frozen=True)
class RetryPolicy:
    attempts_in_place: int
    rounds: int  # passes through the retry topic before giving up
    round_delay: float  # seconds a parked command waits
    backoff: Backoff  # before in-place attempt n + 1, unless the provider said Retry-After


class Delivery:
    def __init__(self, *, send: Sender, idempotent: Callable[[str], bool], records: SendRecords, outputs: Outputs,
                 commits: Commits, metrics: DispatchMetrics, clock: Clock, policy: RetryPolicy,
                 max_in_flight: int, loop: Loop | None = None, trace: StageTrace | None = None) -> None:
        self.send = send
        self.idempotent = idempotent
        self.records = records
        self.outputs = outputs
        self.commits = commits
        self.metrics = metrics
        self.clock = clock
        self.policy = policy
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self.loop = loop
        self.trace = trace
        self.stopping = False
        self._awaiting: dict[str, tuple[Job, asyncio.Task[None]]] = {}  # command id -> echo wait

    def finish(self, job: Job, state: ResultState, *, message_id: str | None = None, error: Failure | None = None,
               first: Sequence[Output] = (), resolved_by: str | None = None) -> None:
        """The terminal result (after `first`, e.g. a dead letter) into the partition's outbox; the offset may
        then be committed with it. The send record says DONE once that transaction has committed."""
        before, after = job.record, done(str(state), message_id)

        def record_done() -> Awaitable[None]:
            return self.records.step_soon(job.command_id, before, after)

        result = self.outputs.result(job.command_id, job.channel_id, state, message_id=message_id, error=error,
                                     resolved_by=resolved_by)
        self.outputs.finished(job.tp, job.offset, [*first, result], record_done)
        self.records.remember(job.command_id)
        job.record = after
        self.commits.done(job.tp, job.offset)

    def skip(self, job: Job) -> None:
        """A redelivered copy of a finished command."""
        self.metrics.duplicates.inc()
        self.commits.done(job.tp, job.offset)

    def finished_here(self, job: Job) -> bool:
        """Finished by this process, or its echo is being awaited here (a copy must not start another wait)."""
        current = self.records.current(job.command_id, job.record)
        return (current is not None and current.state is SendState.DONE) or job.command_id in self._awaiting

    async def deliver(self, job: Job) -> None:
        if job.stages is not None:
            StageTrace.mark(job.stages)
        claimed = await self._claim(job)  # the first attempt's `sending`, written unless the record says otherwise
        if job.stages is not None:
            StageTrace.mark(job.stages)
        current = self.records.current(job.command_id, job.record)
        state = current.state if current is not None else None
        if state is SendState.DONE:
            return self.skip(job)
        if state is SendState.SENT:
            return await self._sent(job, current.message_id if current else None)
        if state is SendState.SENDING and claimed is None and not self.idempotent(job.channel.provider):
            attempted = current.at if current is not None and current.at is not None else self.clock.time()
            return self._unknown(job, attempted, DELIVERY_UNKNOWN)
        for attempt in range(1, self.policy.attempts_in_place + 1):
            if claimed is not None:
                attempted, claimed = claimed, None
            else:
                attempted = self.clock.time()
                job.record = await self.records.step(job.command_id, job.record, sending(attempted))
            try:
                message_id = await self._call(job, job.request)
            except SendFailed as exc:
                return self.finish(job, ResultState.FAILED, error=Failure(
                    ErrorCode.PROVIDER_REJECTED, f"the provider refused the request with HTTP {exc.status}",
                    provider_status=exc.status))
            except SendUnavailable as exc:
                if exc.ambiguous and not self.idempotent(job.channel.provider):
                    return self._unknown(job, attempted, Failure(
                        ErrorCode.DELIVERY_UNKNOWN,
                        f"{exc.reason}: the message may have been delivered; not sent again",
                        provider_status=exc.status))
                if not exc.ambiguous:
                    job.record = await self.records.step(job.command_id, job.record, retrying())
                if attempt == self.policy.attempts_in_place:
                    return self._park(job, exc)
                self.metrics.delivery.retries.inc()
                await self.clock.sleep(self.policy.backoff.delay(attempt, exc.retry_after))
                continue
            # `sent` and the sent map join one pipeline; the result waits for both.
            written = self.records.step_soon(job.command_id, job.record, sent(message_id))
            job.record = sent(message_id)
            return await self._sent(job, message_id, written=written)

    async def _claim(self, job: Job) -> float | None:
        """For a job whose record this process has not seen: one check-and-set writes `sending` (its time is
        returned) or reads the record that stands in the way (job.record, None returned)."""
        if job.known:
            return None
        job.known = True
        finished = self.records.current(job.command_id, None)
        if finished is not None:  # a copy finished in this process: nothing to write, it is skipped
            job.record = finished
            return None
        attempted = self.clock.time()
        stored = await self.records.claim_sending(job.command_id, sending(attempted))
        job.record = stored if stored is not None else sending(attempted)
        return attempted if stored is None else None

    async def end_unsent(self, job: Job, state: ResultState, error: Failure) -> None:
        """Expired or refused before any attempt: the terminal result, unless the record (read first when
        this process has not seen it) says the command ended already."""
        if not job.known:
            job.known = True
            job.record = (await self.records.read([job.command_id])).get(job.command_id)
        if self.finished_here(job):
            return self.skip(job)
        self.finish(job, state, error=error)

    async def _sent(self, job: Job, message_id: str | None, resolved_by: str | None = None,
                    written: Awaitable[None] | None = None) -> None:
        """Remembered in the sent map (and its offer) before the `sent` result: receipts and replies find it.
        `written`: the `sent` record's write, queued by the caller; the result waits for it too."""
        if message_id and self.loop is not None:
            await self.loop.remember(job.command, job.channel, message_id, resolved_by)
        if written is not None:
            await written
        self.finish(job, ResultState.SENT, message_id=message_id, resolved_by=resolved_by)

    # --- unknown outcomes --------------------------------------------------------------------------
    def _unknown(self, job: Job, attempted: float, error: Failure) -> None:
        """Never sent again. With the loop, the echo is awaited off the lane; without it, failed at once."""
        if self.loop is None:
            self.metrics.unknown_sends.labels(outcome="left_unknown").inc()
            return self.finish(job, ResultState.FAILED, error=error)
        task = asyncio.create_task(self._settle(job, attempted, error), name="echo-wait")
        self._awaiting[job.command_id] = (job, task)
        task.add_done_callback(lambda _: self._awaiting.pop(job.command_id, None))
        return None

    async def _settle(self, job: Job, attempted: float, error: Failure) -> None:
        assert self.loop is not None
        try:
            message_id = await self.loop.await_echo(job.command, job.channel, attempted, lambda: self.stopping)
        except EchoWaitInterrupted:
            return  # the offset stays uncommitted: the next owner waits out the rest of the window
        if message_id is None:
            self.metrics.unknown_sends.labels(outcome="left_unknown").inc()
            self.finish(job, ResultState.FAILED, error=error)
            return
        self.metrics.unknown_sends.labels(outcome="resolved_by_echo").inc()
        job.record = await self.records.step(job.command_id, job.record, sent(message_id))
        await self._sent(job, message_id, resolved_by="echo")

    async def cancel_waits(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Partitions given up (None: all): their echo waits stop; the commands are redelivered to the next owner."""
        revoked = set(tps) if tps is not None else None
        for job, task in list(self._awaiting.values()):
            if revoked is None or job.tp in revoked:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _call(self, job: Job, request: Request) -> str:
        provider = job.channel.provider
        try:
            async with self._semaphore:
                if job.stages is not None and self.trace is not None:
                    self.trace.request(job.command_id, job.stages)
                self.metrics.in_flight.inc()
                try:
                    message_id, elapsed = await self.send(provider, request, job.command_id)
                finally:
                    self.metrics.in_flight.dec()
        except SendFailed:
            self.metrics.sends(provider, "failed").inc()
            raise
        except SendUnavailable:
            self.metrics.sends(provider, "unavailable").inc()
            raise
        self.metrics.sends(provider, "sent").inc()
        self.metrics.send_duration(provider).observe(elapsed)
        return message_id

    def _park(self, job: Job, exc: SendUnavailable) -> None:
        """In-place attempts used up: to the retry topic (this command gives up its place), or fail for good."""
        if job.retry_round >= self.policy.rounds:
            error = PermanentError(ErrorCode.RETRIES_EXHAUSTED, f"provider unavailable: {exc.reason}")
            source = SourceRecord(job.tp.topic, job.tp.partition, job.offset, job.channel_id.encode(), job.raw)
            dead = self.outputs.dead_letter(source, error, stage=DELIVERY)
            return self.finish(job, ResultState.FAILED, error=Failure.of(error, exc.status), first=[dead])
        self.metrics.parked.inc()
        parked = self.outputs.parked(job.channel_id, job.raw, job.retry_round + 1, self.policy.round_delay)
        self.outputs.finished(job.tp, job.offset, [parked])
        self.commits.done(job.tp, job.offset)
