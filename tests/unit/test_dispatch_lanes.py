"""dispatch's lanes and delivery through the in-memory harness: a manual clock, the fake broker, the
in-memory send-record store and a scripted provider. No Kafka, no Redis, no sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import hiredis
import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from apiplus.backoff import Backoff
from apiplus.dlq import DeadLetterWriter
from apiplus.harness import Harness, ManualClock
from services.dispatch.commits import Commits
from services.dispatch.core import Channel, parse_command, render_command
from services.dispatch.delivery import Delivery, RetryPolicy
from services.dispatch.holding import Deadlines
from services.dispatch.job import Job
from services.dispatch.lanes import LaneRules, Lanes
from services.dispatch.metrics import DELIVERY, INTAKE, DispatchMetrics
from services.dispatch.outbox import Outboxes
from services.dispatch.progress import Mark
from services.dispatch.providers import PacingRule, Request
from services.dispatch.record import SendRecord, SendState, done, retrying, sending, sent
from services.dispatch.results import RETRY_HEADER, Outputs
from services.dispatch.sender import SendFailed, SendUnavailable
from services.dispatch.store import KEY_PREFIX, MemoryRecordStore, RedisRecordStore, SendRecords

T0 = 1_700_000_000.0
TP = TopicPartition("commands", 0)


class Topics:
    """The rig's topics on the harness broker, read as a read_committed consumer would."""

    def __init__(self, h: Harness) -> None:
        self.broker = h.broker
        for name in ("results", "retry", "commands.dlq", "progress"):
            h.broker.create_topic(name, partitions=2)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in sorted(self.broker.records(topic), key=lambda r: r.timestamp)
                if r.value is not None]

    def headers(self, topic: str) -> list[dict[str, bytes]]:
        return [dict(r.headers) for r in self.broker.records(topic)]

    def results(self) -> list[tuple[str, str]]:
        return [(v["command_id"], v["state"]) for v in self.on("results")]


class FakeProvider:
    """Answers from a script of outcomes (an exception to raise, or a message id), then "SIM<n>"."""

    def __init__(self, clock: ManualClock) -> None:
        self.script: list[Exception | str] = []
        self.calls: list[tuple[str, str, float]] = []  # (provider, idempotency key, clock time)
        self.clock = clock

    async def send(self, provider: str, request: Request, key: str) -> tuple[str, float]:
        self.calls.append((provider, key, self.clock.time()))
        outcome = self.script.pop(0) if self.script else f"SIM{len(self.calls)}"
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, 0.01


class Rig:
    def __init__(self, *, pacing: Callable[[Channel], PacingRule] | None = None, max_queue: int = 1000,
                 idempotent: bool = True) -> None:
        metrics = DispatchMetrics(CollectorRegistry())
        self.h = Harness(start=T0)
        self.clock = self.h.clock
        self.producer = Topics(self.h)
        self.provider = FakeProvider(self.clock)
        self.store = MemoryRecordStore()
        self.commits = Commits()
        self.commits.assign([TP])
        self.outboxes = Outboxes(self.h.kafka, app="test", group_id="g", progress_topic="progress",
                                 commits=self.commits, metrics=metrics.outbox)
        self.open: dict[str, bool] = {}
        dead_letters = {stage: DeadLetterWriter("test", route=lambda _: "commands.dlq", clock=self.clock)
                        for stage in (INTAKE, DELIVERY)}
        self.outputs = Outputs(self.outboxes, results_topic="results", retry_topic="retry",
                               dead_letters=dead_letters, metrics=metrics, clock=self.clock)
        self.delivery = Delivery(
            send=self.provider.send, idempotent=lambda _: idempotent, records=SendRecords(self.store),
            outputs=self.outputs, commits=self.commits, metrics=metrics, clock=self.clock, max_in_flight=8,
            policy=RetryPolicy(attempts_in_place=3, rounds=1, round_delay=60.0, backoff=Backoff(first=0.5, cap=30.0)),
        )
        self.lanes = Lanes(delivery=self.delivery, outputs=self.outputs, clock=self.clock, rules=LaneRules(
            is_open=lambda channel_id: self.open.get(channel_id, True), pacing=pacing, max_queue=max_queue,
            drain_timeout=1.0, draw=lambda: 0.0))
        self._offsets = itertools.count()

    async def add(self, name: str, channel: str = "ch", *, not_after: float | None = None, to: str = "5511999990000",
                  **job: Any) -> Job:
        data = {"command_id": name, "channel_id": channel, "token": "tok", "to": to,
                "message": {"kind": "text", "body": name}}
        if not self.outboxes.boxes:
            await self.outboxes.start()
            await self.outboxes.assign([TP])
        offset = next(self._offsets)
        self.commits.add(TP, offset)
        stored = job.pop("record", None)
        if stored is not None:  # as a crash left it: the worker finds it with its first `sending`
            self.store.records[name] = stored
        command, on = parse_command(data), Channel(channel, "t", "x", "simulator", "plus", "active")
        queued = Job(tp=TP, offset=offset, command=command, channel=on, request=render_command(command, on),
                     raw=orjson.dumps(data), deadlines=Deadlines(self.clock.time(), not_after, max_hold=3600.0), **job)
        await self.lanes.add(queued)
        await self.settle()
        return queued

    async def settle(self) -> None:
        """Let the lanes run, then commit what they wrote, as the worker does every commit interval."""
        await self.clock.settle()
        await self.outboxes.flush()

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)
        await self.outboxes.flush()

    def sent(self) -> list[str]:
        return [key for _, key, _ in self.provider.calls]

    def state(self, command_id: str) -> SendState | None:
        record = self.store.records.get(command_id)
        return record.state if record else None


async def test_held_channel_reports_held_once_and_sends_in_order_when_it_opens() -> None:
    rig = Rig()
    rig.open["ch"] = False
    for i in range(3):
        await rig.add(f"c{i}")
    await rig.advance(600)
    assert rig.sent() == []
    assert rig.producer.results() == [("c0", "queued"), ("c0", "held"), ("c1", "queued"), ("c1", "held"),
                                      ("c2", "queued"), ("c2", "held")]
    assert rig.lanes.counts() == (3, 3, 0)
    rig.open["ch"] = True
    rig.lanes.wake("ch")
    await rig.settle()
    assert rig.sent() == ["c0", "c1", "c2"]
    assert [s for c, s in rig.producer.results()[6:]] == ["sent", "sent", "sent"]
    assert rig.commits.position(TP) == 3


async def test_held_too_long_and_not_after_expire_while_waiting() -> None:
    rig = Rig()
    rig.open["ch"] = False
    await rig.add("late", not_after=T0 + 120)
    await rig.add("long")
    await rig.advance(119)
    assert ("late", "expired") not in rig.producer.results()
    await rig.advance(1)
    await rig.advance(3600 - 120 - 1)
    assert ("long", "expired") not in rig.producer.results()
    await rig.advance(1)
    expired = {v["command_id"]: v["error"]["code"] for v in rig.producer.on("results") if v["state"] == "expired"}
    assert expired == {"late": "not_after_passed", "long": "held_too_long"}
    assert rig.sent() == []
    assert rig.state("late") is SendState.DONE


async def test_paced_channel_waits_its_gap_and_another_channel_does_not_wait() -> None:
    rule = PacingRule(min_gap=4.0, jitter=3.0, hourly_cap=300)
    rig = Rig(pacing=lambda _: rule)
    for i in range(3):
        await rig.add(f"slow{i}", "slow")
    await rig.add("fast0", "fast")
    assert rig.sent() == ["slow0", "fast0"]
    await rig.advance(3.9)
    assert rig.sent() == ["slow0", "fast0"]
    await rig.advance(0.1)  # draw 0.0: the gap is exactly 4 s
    assert rig.sent() == ["slow0", "fast0", "slow1"]
    await rig.advance(4)
    times = [t - T0 for _, _, t in rig.provider.calls]
    assert times == [0.0, 0.0, 4.0, 8.0]


async def test_pacing_holds_across_an_emptied_queue() -> None:
    """A channel whose commands arrive one by one is paced as much as one that gets a burst."""
    rule = PacingRule(min_gap=4.0, jitter=0.0, hourly_cap=2)
    rig = Rig(pacing=lambda _: rule)
    await rig.add("a", "slow")
    assert rig.lanes.lanes == {}  # the queue emptied
    await rig.advance(1)
    await rig.add("b", "slow")
    assert rig.sent() == ["a"]
    await rig.advance(3)
    assert rig.sent() == ["a", "b"]
    await rig.add("c", "slow")
    await rig.advance(600)
    assert rig.sent() == ["a", "b"]  # the hourly cap of 2
    rig.lanes.forget_idle_pacers()
    assert set(rig.lanes.pacers) == {"slow"}  # still waiting
    await rig.advance(3000)
    assert [t - T0 for _, _, t in rig.provider.calls] == [0.0, 4.0, 3600.0]
    await rig.advance(3600)
    rig.lanes.forget_idle_pacers()
    assert rig.lanes.pacers == {}


async def test_idle_pacers_are_swept_at_most_once_a_minute() -> None:
    rig = Rig(pacing=lambda _: PacingRule(min_gap=1.0, jitter=0.0, hourly_cap=100))
    await rig.add("a", "ch")  # sent at T0
    await rig.advance(3599)
    rig.lanes.forget_idle_pacers()  # its send is still in the hour: kept
    assert set(rig.lanes.pacers) == {"ch"}
    await rig.advance(30)  # idle now, but the last sweep was 30 s ago
    rig.lanes.forget_idle_pacers()
    assert set(rig.lanes.pacers) == {"ch"}
    await rig.advance(31)
    rig.lanes.forget_idle_pacers()
    assert rig.lanes.pacers == {}


async def test_transient_failures_back_off_then_send_once() -> None:
    rig = Rig()
    rig.provider.script = [SendUnavailable("provider answered 503", ambiguous=False, status=503),
                           SendUnavailable("provider answered 429", ambiguous=False, retry_after=2.0, status=429)]
    await rig.add("c")
    assert rig.state("c") is SendState.RETRYING
    await rig.advance(0.5)  # first backoff: base
    assert len(rig.sent()) == 2
    await rig.advance(1.9)
    assert len(rig.sent()) == 2  # Retry-After 2 s wins over the backoff
    await rig.advance(0.1)
    assert [t - T0 for _, _, t in rig.provider.calls] == [0.0, 0.5, 2.5]
    assert rig.producer.results() == [("c", "queued"), ("c", "sent")]
    assert rig.state("c") is SendState.DONE


async def test_attempts_used_up_park_without_token_then_fail_after_the_last_round() -> None:
    rig = Rig()
    down = SendUnavailable("cannot connect", ambiguous=False)
    rig.provider.script = [down] * 6
    await rig.add("c")
    await rig.advance(10)
    [parked] = rig.producer.on("retry")
    [headers] = rig.producer.headers("retry")
    assert "token" not in parked
    assert headers[RETRY_HEADER] == b"1"
    assert rig.commits.position(TP) == 1  # the parked command's offset may be committed
    await rig.add("c", retry_round=1)  # as read back from the retry topic
    await rig.advance(10)
    assert len(rig.sent()) == 6
    [dead] = rig.producer.on("commands.dlq")
    assert dead["error"]["code"] == "retries_exhausted"
    assert rig.producer.results()[-1] == ("c", "failed")


async def test_unknown_outcome_is_not_sent_again_without_idempotency() -> None:
    rig = Rig(idempotent=False)
    await rig.add("crashed", record=sending())  # a crash left the record SENDING
    rig.provider.script = [SendUnavailable("timeout", ambiguous=True)]
    await rig.add("timed-out")
    failed = {v["command_id"]: v["error"]["code"] for v in rig.producer.on("results") if v["state"] == "failed"}
    assert failed == {"crashed": "delivery_unknown", "timed-out": "delivery_unknown"}
    assert rig.sent() == ["timed-out"]


async def test_unknown_outcome_is_resent_with_the_same_key_where_idempotent() -> None:
    rig = Rig(idempotent=True)
    await rig.add("crashed", record=sending())
    assert rig.sent() == ["crashed"]
    assert rig.producer.results()[-1] == ("crashed", "sent")


async def test_provider_refusal_fails_with_its_status() -> None:
    rig = Rig()
    rig.provider.script = [SendFailed(401, "no")]
    await rig.add("c")
    [failed] = [v for v in rig.producer.on("results") if v["state"] == "failed"]
    assert failed["error"] == {"code": "provider_rejected", "field": None, "provider_status": 401,
                               "message": "the provider refused the request with HTTP 401"}


async def test_a_second_copy_in_the_lane_is_skipped_and_a_full_queue_expires() -> None:
    rig = Rig(max_queue=2)
    rig.open["ch"] = False
    await rig.add("c")
    await rig.add("c")
    await rig.add("overflow")
    assert ("overflow", "expired") in rig.producer.results()
    rig.open["ch"] = True
    rig.lanes.wake("ch")
    await rig.settle()
    assert rig.sent() == ["c"]
    assert [s for c, s in rig.producer.results() if c == "c" and s == "sent"] == ["sent"]
    assert rig.commits.position(TP) == 3


async def test_commits_stop_below_the_oldest_unfinished_command_and_remember_what_finished_above() -> None:
    rig = Rig()
    rig.open["held"] = False
    await rig.add("h", "held")  # offset 0, waits
    await rig.add("a", "open")  # offset 1, sent
    await rig.add("b", "open")  # offset 2, sent
    assert rig.sent() == ["a", "b"]
    assert rig.h.broker.committed("g", TP) == 0
    assert [rig.outboxes.mark(TP, o) for o in range(3)] == [Mark.HELD, Mark.FINISHED, Mark.FINISHED]
    rig.open["held"] = True
    rig.lanes.wake("held")
    await rig.settle()
    assert rig.h.broker.committed("g", TP) == 3
    assert rig.outboxes.boxes[TP].committed.marks == {}


@pytest.mark.parametrize("revoked", [True, False])
async def test_drain_drops_unstarted_work_of_revoked_partitions(revoked: bool) -> None:
    rig = Rig()
    rig.open["ch"] = False
    await rig.add("c")
    await rig.lanes.drain([TP] if revoked else [TopicPartition("other", 0)])
    assert rig.lanes.counts()[0] == (0 if revoked else 1)
    assert rig.lanes.buffered == (0 if revoked else 1)


async def test_the_first_sending_claims_an_absent_or_retrying_record_and_nothing_else() -> None:
    store = MemoryRecordStore()
    store.records.update({"retrying": retrying(), "sending": sending(T0), "sent": sent("M1"), "done": done("sent")})
    new = sending(T0 + 1)
    assert await store.claim("absent", new) is None
    assert await store.claim("retrying", new) is None
    assert [await store.claim(i, new) for i in ("sending", "sent", "done")] == [sending(T0), sent("M1"), done("sent")]
    assert store.records == {"absent": new, "retrying": new, "sending": sending(T0), "sent": sent("M1"),
                             "done": done("sent")}


async def test_a_copy_finished_elsewhere_is_skipped_by_its_first_sending_without_a_request() -> None:
    """Intake no longer reads the record: the check-and-set before the request finds DONE (or SENT) instead."""
    rig = Rig()
    await rig.add("republished", record=done("sent", "M1"))
    await rig.add("crashed-after-send", record=sent("M2"))
    await rig.add("parked-earlier", record=retrying())
    assert rig.sent() == ["parked-earlier"]
    assert [(c, s) for c, s in rig.producer.results() if s != "queued"] == [
        ("crashed-after-send", "sent"), ("parked-earlier", "sent")]
    assert rig.commits.position(TP) == 3
    assert rig.state("republished") is SendState.DONE


async def test_a_finished_copy_that_waits_out_its_hold_is_skipped_not_expired() -> None:
    rig = Rig()
    rig.open["ch"] = False
    await rig.add("republished", record=done("sent", "M1"), not_after=T0 + 5)
    await rig.add("new", not_after=T0 + 5)
    await rig.advance(10)
    assert rig.sent() == []
    assert [(c, s) for c, s in rig.producer.results() if s not in ("queued", "held")] == [("new", "expired")]
    assert rig.commits.position(TP) == 2


class FlakyRedis:
    """Just enough of redis.asyncio for the record store's batched round trips (a pooled connection: commands
    packed and sent at once, replies read in order): the first `failures` round trips fail."""

    socket_timeout = 2.0

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.data: dict[str, bytes] = {}
        self.connection_pool = self
        self._sent: list[list[bytes]] = []

    async def get_connection(self) -> FlakyRedis:
        return self

    async def release(self, connection: FlakyRedis) -> None:
        return None

    async def disconnect(self) -> None:
        self._sent = []

    async def send_packed_command(self, packed: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("down")
        reader = hiredis.Reader()  # the commands as Redis reads them
        reader.feed(packed)
        self._sent = list(iter(reader.gets, False))

    async def read_response(self, timeout: float | None = None) -> bytes:
        name, key, value, *_ = self._sent.pop(0)
        assert name == b"SET"
        self.data[key.decode()] = value
        return b"OK"


async def test_a_done_written_without_a_task_still_waits_a_redis_outage_out() -> None:
    h = Harness(start=T0)
    redis = FlakyRedis(failures=2)
    errors: list[None] = []
    records = SendRecords(RedisRecordStore(redis, 60, on_error=lambda: errors.append(None),  # type: ignore[arg-type]
                                           backoff=Backoff(first=0.2, cap=1.0), clock=h.clock))
    written = asyncio.ensure_future(h.clock.run(asyncio.gather(
        records.step_soon("a", sent("M1"), done("sent", "M1")), records.step_soon("b", None, done("expired")))))
    await h.clock.settle()
    assert not written.done()
    assert errors  # the first pipeline failed: retried with backoff
    await h.clock.advance(5)
    await written
    assert {k.removeprefix(KEY_PREFIX): SendRecord.from_json(v) for k, v in redis.data.items()} == {
        "a": done("sent", "M1"), "b": done("expired")}
    assert records.current("a", None) == done("unknown")  # remembered as finished here at once
