"""The whole dispatch worker through the in-memory harness: intake, lanes, delivery, results, dead
letters, the retry topic and commits, on a manual clock. No Kafka, no Redis, no sleeps."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from apiplus.harness import Harness, Killed, ManualClock, ReplyLost
from apiplus.kafka import KafkaClientConfig, KafkaClients
from services.dispatch import providers
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.providers import Provider, Request
from services.dispatch.sender import SendUnavailable
from services.dispatch.settings import DispatchSettings
from services.dispatch.stagetrace import STAGES, StageTrace
from services.dispatch.store import MemoryRecordStore
from services.dispatch.worker import Dispatcher

TOKEN = "tok-" + "x" * 20
TOPICS = {"commands_topic": "cmd", "retry_topic": "retry", "results_topic": "results",
          "registry_topic": "registry", "health_topic": "health", "progress_topic": "progress"}


class ScriptedProvider:
    """The `ProviderPort` of the worker: records calls, answers from a script, then "SIM<n>"."""

    def __init__(self, clock: ManualClock) -> None:
        self.providers: dict[str, Provider] = providers.configure()
        self.calls: list[str] = []
        self.script: list[Exception] = []
        self.clock = clock
        self.latency = 0.0

    def idempotent(self, provider: str) -> bool:
        return provider == "simulator"

    async def send(self, provider: str, request: Request, idempotency_key: str) -> tuple[str, float]:
        self.calls.append(idempotency_key)
        await self.clock.sleep(self.latency)
        if self.script:
            raise self.script.pop(0)
        return f"SIM{len(self.calls)}", 0.001

    async def close(self) -> None:
        return None


class World:
    def __init__(self, **settings: Any) -> None:
        self.h = Harness()
        for topic in [*TOPICS.values(), "cmd.dlq"]:
            self.h.broker.create_topic(topic, partitions=2)
        self.store = MemoryRecordStore()
        self.provider = ScriptedProvider(self.h.clock)
        self.settings = DispatchSettings(kafka_bootstrap="harness", redis_url="redis://harness",
                                         pacing_enabled=False, **{**TOPICS, **settings})

    def channel(self, channel_id: str, **row: Any) -> None:
        value = {"channel_id": channel_id, "tenant_id": "t", "provider": "simulator", "mode": "plus",
                 "status": "active", "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), **row}
        self.h.broker.produce("registry", orjson.dumps(value), key=channel_id.encode())

    def health(self, channel_id: str, state: str) -> None:
        value = {"channel_id": channel_id, "state": state}
        self.h.broker.produce("health", orjson.dumps(value), key=channel_id.encode())

    def command(self, command_id: str, channel_id: str, **extra: Any) -> None:
        value = {"command_id": command_id, "channel_id": channel_id, "token": TOKEN, "to": "5511999990000",
                 "message": {"kind": "text", "body": command_id}, **extra}
        self.h.broker.produce("cmd", orjson.dumps(value), key=channel_id.encode())

    async def started(self, trace: StageTrace | None = None) -> Dispatcher:
        dispatcher = Dispatcher(self.settings, self.h.kafka, self.store, self.provider,
                                DispatchMetrics(CollectorRegistry()), clock=self.h.clock, trace=trace)
        assert await self.h.clock.run(dispatcher.start())
        await dispatcher.step()  # the first poll joins the group and takes the partitions
        return dispatcher

    async def run_for(self, dispatcher: Dispatcher, seconds: float, every: float = 0.5) -> None:
        """Poll, let the lanes work and time pass, as the worker's loop would."""
        for _ in range(int(seconds / every)):
            await dispatcher.step()
            await self.h.clock.advance(every)

    def kill(self, dispatcher: Dispatcher) -> None:
        """As kill -9: nothing more runs, open transactions stay open, the group notices later."""
        for box in dispatcher.outboxes.boxes.values():
            box.producer.crash()  # type: ignore[attr-defined]
        for lane in dispatcher.lanes.lanes.values():
            if lane.task is not None:
                lane.task.cancel()
        for task in [*dispatcher._tables, dispatcher._flusher]:
            if task is not None:
                task.cancel()
        self.h.broker.expel(dispatcher._consumer)  # type: ignore[arg-type]

    async def closed(self, dispatcher: Dispatcher) -> None:
        dispatcher.stop()
        await self.h.clock.run(dispatcher.close())

    def out(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.h.broker.records(topic) if r.value is not None]

    def results(self) -> Counter[tuple[str, str]]:
        """(command id, state) of every result written, counted."""
        return Counter((r["command_id"], r["state"]) for r in self.out("results"))

    def terminal(self) -> Counter[tuple[str, str]]:
        return Counter({key: n for key, n in self.results().items() if key[1] not in ("queued", "held")})

    def committed(self, group: str = "apiplus-dispatch") -> list[int]:
        return [self.h.broker.committed(group, TopicPartition("cmd", p)) or 0 for p in (0, 1)]

    def ends(self) -> list[int]:
        return [self.h.broker.high_watermark(TopicPartition("cmd", p)) for p in (0, 1)]


async def test_a_burst_with_refusals_ends_each_command_once_and_commits_everything() -> None:
    w = World()
    for c in ("a", "b", "c"):
        w.channel(c)
    d = await w.started()
    for i in range(12):
        w.command(f"ok-{i}", "abc"[i % 3])
    w.command("bad-token", "a", token="wrong")
    w.command("four-buttons", "b", message={"kind": "buttons", "body": "?", "buttons": [
        {"id": str(n), "title": f"B{n}"} for n in range(4)]})
    w.h.broker.produce("cmd", b"{not json", key=b"c")
    w.command("ok-0", "a")  # upstream publishes one command twice
    await w.run_for(d, 3)
    await w.closed(d)
    assert sorted(w.provider.calls) == sorted(f"ok-{i}" for i in range(12))
    terminal = w.terminal()
    assert all(n == 1 for n in terminal.values())
    assert {c for c, s in terminal if s == "sent"} == {f"ok-{i}" for i in range(12)}
    assert {(c, s) for c, s in terminal if s != "sent"} == {("bad-token", "rejected"), ("four-buttons", "rejected")}
    assert sorted(r["error"]["code"] for r in w.out("cmd.dlq")) == ["invalid_json", "limit_exceeded", "unauthorized"]
    assert TOKEN not in repr(w.out("cmd.dlq")) + repr(w.out("results"))
    assert w.committed() == w.ends()


async def test_a_held_channel_keeps_its_offset_uncommitted_across_a_restart() -> None:
    w = World()
    w.channel("open")
    w.channel("closed")
    w.health("closed", "closed")
    d = await w.started()
    w.command("h-1", "closed")
    w.command("o-1", "open")
    w.command("h-2", "closed")
    await w.run_for(d, 3)
    assert w.provider.calls == ["o-1"]
    states = Counter(r["state"] for r in w.out("results"))
    assert states == {"queued": 3, "held": 2, "sent": 1}
    await w.closed(d)
    assert w.committed() != w.ends()  # the held commands were not finished: not committed
    w.health("closed", "open")
    d = await w.started()  # a new instance: redelivers only the unfinished commands
    await w.run_for(d, 3)
    await w.closed(d)
    assert sorted(w.provider.calls) == ["h-1", "h-2", "o-1"]
    assert all(n == 1 for n in w.terminal().values())
    assert w.committed() == w.ends()


async def test_an_unavailable_provider_parks_the_command_and_the_retry_topic_sends_it() -> None:
    w = World(attempts_in_place=2, backoff_base_seconds=0.5, retry_delay_seconds=60)
    w.channel("a")
    d = await w.started()
    w.provider.script = [SendUnavailable("provider answered 503", ambiguous=False, status=503)] * 2
    w.command("later", "a")
    await w.run_for(d, 2)
    [parked] = w.out("retry")
    assert "token" not in parked
    assert w.terminal() == Counter()
    await w.run_for(d, 58)  # parked at 0.5 s with a 60 s delay
    assert w.provider.calls == ["later", "later"]  # not before its not-before time
    await w.run_for(d, 2)
    await w.closed(d)
    assert w.provider.calls == ["later"] * 3
    assert w.terminal() == Counter({("later", "sent"): 1})


async def test_kill_during_a_burst_leaves_every_result_exactly_once() -> None:
    """Results, dead letters and progress commit with the offsets: a crash repeats none and loses none."""
    w = World(commit_interval_seconds=0.2)
    for c in ("a", "b", "c", "held"):
        w.channel(c)
    w.health("held", "closed")
    w.provider.latency = 0.05
    d = await w.started()
    valid = []
    for i in range(45):
        valid.append(f"ok-{i}")
        w.command(f"ok-{i}", "abc"[i % 3])
        if i % 9 == 4:
            w.command(f"bad-{i}", "abc"[i % 3], token="wrong")
    for i in range(3):
        w.command(f"held-{i}", "held")
    await w.run_for(d, 0.6, every=0.1)
    sent_before = len(set(w.provider.calls))
    assert 0 < sent_before < len(valid), "the kill must land in the middle of the burst"
    w.kill(d)
    w.health("held", "open")
    d = await w.started()  # the new owner fences the old one's transactions
    await w.run_for(d, 10)
    await w.closed(d)
    results = w.out("results")
    assert len({r["event_id"] for r in results}) == len(results), "a result was written twice"
    by_command = Counter((r["command_id"], r["state"]) for r in results)
    expected = Counter({**{(c, "queued"): 1 for c in valid}, **{(c, "sent"): 1 for c in valid},
                        **{(f"held-{i}", s): 1 for i in range(3) for s in ("queued", "held", "sent")},
                        **{(f"bad-{i}", "rejected"): 1 for i in range(45) if i % 9 == 4}})
    assert by_command == expected
    assert len(w.out("cmd.dlq")) == 5
    assert set(w.provider.calls) == {*valid, "held-0", "held-1", "held-2"}
    assert w.committed() == w.ends()


async def test_kill_inside_a_commit_leaves_its_transaction_to_the_next_owner() -> None:
    """kill -9 while a partition's transaction commits: it stays open (holding back read_committed
    readers) until the next owner's producer fences it and aborts it; then everything comes once."""
    w = World(commit_interval_seconds=0.2)
    w.channel("a")
    d = await w.started()
    for i in range(8):
        w.command(f"ok-{i}", "a")
    w.command("bad", "a", token="wrong")
    await w.run_for(d, 0.1, every=0.1)
    w.h.broker.fail_next("commit", Killed())
    await w.run_for(d, 0.4, every=0.1)
    assert d._flusher is not None
    assert d._flusher.done(), "the commit was not reached"
    w.kill(d)
    assert w.out("results") == []  # the open transaction holds its partition back
    d = await w.started()
    await w.run_for(d, 3)
    await w.closed(d)
    seen = w.results()
    assert seen == Counter({**{(f"ok-{i}", s): 1 for i in range(8) for s in ("queued", "sent")},
                            ("bad", "rejected"): 1})
    assert len(w.out("cmd.dlq")) == 1
    assert w.committed() == w.ends()


async def test_a_zombie_that_missed_the_rebalance_is_fenced_and_writes_nothing() -> None:
    """The old owner is expelled (a session timeout) but keeps running: the new owner's producers fence
    it, so none of its later results commit; the new owner's do, once each."""
    w = World(commit_interval_seconds=0.2)
    w.channel("a")
    w.provider.latency = 0.05
    zombie = await w.started()
    for i in range(10):
        w.command(f"ok-{i}", "a")
    await w.run_for(zombie, 0.3, every=0.1)
    busy = TopicPartition("cmd", w.h.broker.records("cmd")[0].partition)
    fenced = zombie.outboxes.boxes[busy].producer
    w.h.broker.expel(zombie._consumer)  # type: ignore[arg-type]
    owner = await w.started()
    for _ in range(40):  # both poll; the zombie still holds its old assignment
        await zombie.step()
        await owner.step()
        await w.h.clock.advance(0.1)
    assert busy not in zombie.outboxes.boxes, "the zombie's producer was not fenced"
    assert fenced.stopped, "the fenced producer was left open"  # type: ignore[attr-defined]
    await w.closed(owner)
    w.kill(zombie)
    seen = w.results()
    assert seen == Counter({(f"ok-{i}", s): 1 for i in range(10) for s in ("queued", "sent")})
    assert w.committed() == w.ends()


async def test_a_registry_change_reaches_the_next_command_although_channels_are_built_once_per_row() -> None:
    w = World()
    w.channel("a")
    d = await w.started()
    w.command("first", "a")
    w.command("second", "a")
    await w.run_for(d, 2)
    assert d._channel("a") is d._channel("a")  # one Channel per registry row, shared by its jobs
    w.channel("a", status="inactive")  # the registry says otherwise: a new row
    await w.run_for(d, 1)
    w.command("after", "a")
    await w.run_for(d, 2)
    await w.closed(d)
    assert sorted(w.provider.calls) == ["first", "second"]
    assert w.terminal()[("after", "rejected")] == 1
    assert d._channel("b") is None


async def burst(w: World) -> Dispatcher:
    """50 channels, then 3 000 commands over them."""
    for c in range(50):
        w.channel(f"c{c}")
    d = await w.started()
    for i in range(3000):
        w.command(f"k-{i}", f"c{i % 50}")
    return d


async def burst_peak(sendable: int) -> tuple[int, World]:
    """3 000 commands over 50 channels, each send taking a second: the most commands the lanes held at once."""
    w = World(max_buffered_sendable=sendable)
    w.provider.latency = 1.0
    d = await burst(w)
    peak = 0
    for _ in range(200):
        await w.run_for(d, 0.5)
        peak = max(peak, d.lanes.buffered)
        if len(w.provider.calls) == 3000 and d.lanes.buffered == 0:
            break
    await w.closed(d)
    assert sorted(w.provider.calls) == sorted(f"k-{i}" for i in range(3000))
    assert all(n == 1 for n in w.terminal().values())
    return peak, w


async def test_a_burst_is_read_about_as_fast_as_it_is_sent() -> None:
    peak, w = await burst_peak(sendable=100)
    assert peak <= 100 + 1000  # the limit, plus at most one poll read before the pause
    assert w.committed() == w.ends()
    unbounded, _ = await burst_peak(sendable=50_000)
    assert unbounded > 2000  # the same burst without the limit: most of it in memory at once


async def test_held_commands_do_not_count_against_the_sendable_limit() -> None:
    w = World(max_buffered_sendable=100)
    w.channel("open")
    w.channel("closed")
    w.health("closed", "closed")
    d = await w.started()
    for i in range(300):
        w.command(f"h-{i}", "closed")
    await w.run_for(d, 2)  # held, and counted as held at a gauge export
    for i in range(5):
        w.command(f"o-{i}", "open")
    await w.run_for(d, 3)
    assert sorted(w.provider.calls) == [f"o-{i}" for i in range(5)]
    assert d.lanes.buffered == 300  # every held command kept
    await w.closed(d)


async def unflushed_peak(limit: int) -> tuple[int, World]:
    """3 000 quick sends over 50 channels while commits come only every 20 s: the most outputs that waited
    for a transaction at once."""
    d = await burst(w := World(max_unflushed=limit, commit_interval_seconds=20.0))
    peak = 0
    for _ in range(400):
        await w.run_for(d, 0.5)
        peak = max(peak, d.outboxes.waiting())
        if len(w.provider.calls) == 3000 and w.committed() == w.ends():
            break
    await w.closed(d)
    assert sorted(w.provider.calls) == sorted(f"k-{i}" for i in range(3000))
    assert all(n == 1 for n in w.terminal().values())
    assert w.committed() == w.ends()
    return peak, w


async def test_intake_pauses_while_the_commits_fall_behind_the_sends() -> None:
    peak, w = await unflushed_peak(limit=100)
    # the limit, plus what one poll read before the pause produces (a `queued` and a terminal result each)
    assert peak <= 100 + 2 * 1000
    assert w.settings.max_unflushed == 100
    unbounded, _ = await unflushed_peak(limit=50_000)
    assert unbounded >= 2 * 3000  # without the limit the whole burst's results wait for the commit


@pytest.mark.parametrize("committed", [True, False])
async def test_a_commit_in_doubt_while_the_broker_stays_away_is_written_once(committed: bool) -> None:
    """A commit fails and the producer cannot be renewed for a while (the broker away). If the commit had
    reached the broker (only its reply was lost), the progress read back at the next renewal says so and its
    results are not written a second time; if it had not, they are written then. Either way: once."""
    w = World()
    w.channel("a")
    d = await w.started()
    for i in range(4):
        w.command(f"k-{i}", "a")
    w.h.broker.fail_next("commit", ReplyLost("connection dropped after the request") if committed else None)
    w.h.broker.fail_next("init", times=3)  # the renewals of the next three flushes fail
    in_doubt = 0
    for _ in range(5):  # commands only arrive after the lost reply: the first flushes hold just those four
        await w.run_for(d, 1)
        doubtful = sum(len(box.in_doubt[0].outputs) for box in d.outboxes.boxes.values() if box.in_doubt)
        assert d.outboxes.waiting() >= doubtful  # backpressure counts a flush in doubt
        in_doubt = max(in_doubt, doubtful)
    assert in_doubt == 8  # the four commands' `queued` and `sent` waited, in doubt, for a renewal
    for i in range(4, 6):
        w.command(f"k-{i}", "a")
    await w.run_for(d, 4)
    await w.closed(d)
    assert w.results() == Counter({(f"k-{i}", s): 1 for i in range(6) for s in ("queued", "sent")})
    assert w.committed() == w.ends()


async def test_a_command_published_again_after_it_finished_here_gets_no_second_queued() -> None:
    w = World()
    w.channel("a")
    d = await w.started()
    w.command("once", "a")
    await w.run_for(d, 2)
    w.command("once", "a")  # upstream publishes it again, after it was sent and committed
    await w.run_for(d, 2)
    await w.closed(d)
    assert w.results() == Counter(
        {("once", "queued"): 1, ("once", "sent"): 1})
    assert w.provider.calls == ["once"]
    assert w.committed() == w.ends()


async def test_a_stage_trace_has_one_line_per_command_at_its_first_request(tmp_path: Any) -> None:
    path = tmp_path / "stages.tsv"
    w = World()
    w.channel("a")
    dispatcher = await w.started(trace=StageTrace(str(path)))
    for i in range(5):
        w.command(f"t-{i}", "a")
    w.command("refused", "a", token="wrong")  # never requested: no line
    await w.run_for(dispatcher, 3)
    await w.closed(dispatcher)
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    assert sorted(line[0] for line in lines) == [f"t-{i}" for i in range(5)]
    for line in lines:
        produced, *taken = map(float, line[1:])
        assert produced > 0  # the record's timestamp
        assert len(taken) == len(STAGES) - 1
        assert taken == sorted(taken)  # intake, lane, claimed, request: in that order


async def test_the_commands_consumer_fetches_at_most_the_configured_bytes_per_partition() -> None:
    """Fetched records wait in memory while intake is paused: dispatch asks for half of aiokafka's 1 MiB."""
    for settings, expected in (({}, 512 * 1024), ({"max_partition_fetch_bytes": 128 * 1024}, 128 * 1024)):
        w = World(**settings)
        d = await w.started()
        (consumer,) = [c for c in w.h.kafka.consumers if c.group_id == w.settings.group_id]
        assert consumer.max_partition_fetch_bytes == expected
        await w.closed(d)
    real = KafkaClients(KafkaClientConfig("127.0.0.1:1", client_id="t")).group_consumer(
        "g", max_partition_fetch_bytes=128 * 1024)
    assert real._max_partition_fetch_bytes == 128 * 1024  # type: ignore[attr-defined]
