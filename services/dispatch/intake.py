"""Intake: a fetched batch of commands becomes jobs in lanes, or refusals with a result and a dead letter.

Every command is validated, authorised (by channel token; commands from the retry topic carry none and
are checked only for channel status) and rendered before it is queued, so what the provider cannot
carry is refused at once. Send records are not read for what is queued (the first `sending` is a
check-and-set in delivery.py); the refusals of a batch read theirs in one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

from apiplus.clock import Clock
from apiplus.decode import parse_object
from apiplus.envelope import parse_rfc3339
from apiplus.errors import ErrorCode, PermanentError
from services.dispatch.commits import Commits
from services.dispatch.core import Channel, Command, Request, authorize, parse_command, render_command
from services.dispatch.holding import Deadlines
from services.dispatch.job import Job
from services.dispatch.lanes import Lanes
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.outcome import Failure, ResultState
from services.dispatch.progress import Mark
from services.dispatch.record import SendRecord
from services.dispatch.results import NOT_BEFORE_HEADER, RETRY_HEADER, Outputs
from services.dispatch.stagetrace import StageTrace
from services.dispatch.store import SendRecords


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


class Intake:
    def __init__(self, *, retry_topic: str, channel: Callable[[str], Channel | None], records: SendRecords,
                 lanes: Lanes, outputs: Outputs, commits: Commits, metrics: DispatchMetrics,
                 clock: Clock, max_hold: float, trace: StageTrace | None = None) -> None:
        self.retry_topic = retry_topic
        self.channel = channel
        self.records = records
        self.lanes = lanes
        self.outputs = outputs
        self.commits = commits
        self.metrics = metrics
        self.clock = clock
        self.max_hold = max_hold
        self.trace = trace

    async def accept_batch(self, tp: TopicPartition, records: Sequence[Any]) -> None:
        """Queue what is valid; refuse the rest. Send records are not read here: the first `sending` is a
        check-and-set (delivery.py), so only refusals read theirs, in one round trip per batch."""
        source = "retry" if tp.topic == self.retry_topic else "commands"
        refused: list[tuple[Any, dict[str, Any], PermanentError]] = []
        self.metrics.commands(source).inc(len(records))
        accepted = 0
        for record in records:
            self.commits.add(tp, record.offset)
            reported = self.outputs.committed(tp, record.offset)  # how far it got before a restart
            if reported is Mark.FINISHED:
                self._skip(tp, record.offset)
                continue
            try:
                data = parse_object(record.value)
            except PermanentError as exc:
                self.metrics.intake.record("dead_lettered")
                self.outputs.finished(tp, record.offset, [self.outputs.dead_letter(record, exc)])
                self.commits.done(tp, record.offset)
                continue
            try:
                command, channel, request = self._check(tp, data)
            except PermanentError as exc:
                self.metrics.intake.record("dead_lettered")
                refused.append((record, data, exc))
                continue
            accepted += 1
            if self.records.current(command.command_id, None) is not None:
                self._skip(tp, record.offset)  # finished in this process already: no second `queued`, no send
                continue
            await self._queue(tp, record, command, channel, request, reported)
        self.metrics.intake.record("ok", accepted)
        if refused:
            stored = await self.records.read([_text(data, "command_id") or "" for _, data, _ in refused])
            for record, data, error in refused:
                self._refuse(tp, record, data, error, stored.get(_text(data, "command_id") or ""))

    def _skip(self, tp: TopicPartition, offset: int) -> None:
        """A copy of a finished command: counted, its offset done, nothing written."""
        self.metrics.duplicates.inc()
        self.commits.done(tp, offset)

    async def _queue(self, tp: TopicPartition, record: Any, command: Command, channel: Channel,
                     request: Request, reported: Mark) -> None:
        headers = dict(record.headers or ())
        not_after = parse_rfc3339(command.not_after).timestamp() if command.not_after is not None else None
        await self.lanes.add(Job(
            tp=tp, offset=record.offset, command=command, channel=channel, request=request, raw=record.value,
            deadlines=Deadlines(accepted_at=self.clock.time(), not_after=not_after, max_hold=self.max_hold),
            retry_round=int(headers.get(RETRY_HEADER, b"0") or 0),
            not_before=float(headers.get(NOT_BEFORE_HEADER, b"0") or 0),
            queued_reported=reported >= Mark.QUEUED, held_reported=reported >= Mark.HELD,
            stages=self.trace.start(record.timestamp) if self.trace is not None else None,
        ))

    def _check(self, tp: TopicPartition, data: dict[str, Any]) -> tuple[Command, Channel, Request]:
        parked = tp.topic == self.retry_topic
        command = parse_command(data, token_required=not parked)
        channel = self.channel(command.channel_id)
        if not parked:
            authorize(command, data.get("token"), channel)
        elif channel is None or channel.status != "active":
            raise PermanentError(ErrorCode.CHANNEL_INACTIVE, "the channel is no longer active", "channel_id")
        assert channel is not None
        # Rendered once, here: what the provider cannot carry is refused before it is queued.
        return command, channel, render_command(command, channel)

    def _refuse(self, tp: TopicPartition, record: Any, data: dict[str, Any], exc: PermanentError,
                stored: SendRecord | None) -> None:
        """A dead letter, and a `rejected` result unless another copy of the command got further."""
        self.metrics.rejects(str(exc.code)).inc()
        command_id, channel_id = _text(data, "command_id"), _text(data, "channel_id")
        outputs, after = [], None
        if command_id and channel_id and self.records.current(command_id, stored) is None:
            outputs.append(self.outputs.result(command_id, channel_id, ResultState.REJECTED, error=Failure.of(exc)))
            self.records.remember(command_id)

            async def after() -> None:
                await self.records.claim_terminal(command_id, str(ResultState.REJECTED))

        outputs.append(self.outputs.dead_letter(record, exc))
        self.outputs.finished(tp, record.offset, outputs, after)
        self.commits.done(tp, record.offset)
