"""One accepted command on its way through a lane."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from services.dispatch.core import Channel, Command
from services.dispatch.holding import Deadlines
from services.dispatch.providers import Request
from services.dispatch.record import SendRecord


@dataclass
class Job:
    tp: TopicPartition
    offset: int
    command: Command
    channel: Channel
    request: Request  # rendered once, at intake (which refuses what cannot be rendered)
    raw: bytes
    deadlines: Deadlines
    retry_round: int = 0
    not_before: float = 0.0
    queued_reported: bool = False  # its `queued` result is out (or committed before a restart)
    held_reported: bool = False
    record: SendRecord | None = None  # the send record as last read or written by this process
    # False until this process has read or written the record: intake does not read it; the first
    # `sending` is a check-and-set that returns the stored record instead when one says otherwise.
    known: bool = False
    stages: list[float] | None = None  # stagetrace.py, when tracing: times of its stages so far

    @property
    def command_id(self) -> str:
        return self.command.command_id

    @property
    def channel_id(self) -> str:
        return self.channel.channel_id
