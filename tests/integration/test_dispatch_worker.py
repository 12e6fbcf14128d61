"""dispatch through the real Kafka, Redis and simulator: once per command, held in order, paced apart, refused."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from apiplus import redisio
from apiplus.kafka import KafkaClientConfig, KafkaClients
from services.dispatch import providers
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.sender import ProviderClient
from services.dispatch.settings import DispatchSettings
from services.dispatch.simulator import Faults
from services.dispatch.store import RedisRecordStore
from services.dispatch.worker import Dispatcher
from tests.integration.dispatchtools import (
    RUN,
    RunningSimulator,
    channel_row,
    dispatch_env,
    dispatch_topics,
    text_command,
)
from tests.integration.kafkatools import (
    caught_up,
    create_topics,
    produce,
    read_all,
    read_to_end,
    start_worker,
    wait_for,
)

TOKEN = "tok-" + "s3cr3t" * 4


@pytest.fixture
async def simulator(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    sim = RunningSimulator(tmp_path / "simulator.jsonl")
    await sim.start()
    yield sim
    await sim.stop()


async def _topics(partitions: int = 3) -> dict[str, str]:
    topics = dispatch_topics()
    await create_topics([topics["commands_topic"], topics["retry_topic"], topics["results_topic"],
                         topics["commands_topic"] + ".dlq"], partitions=partitions)
    tables = [topics["registry_topic"], topics["health_topic"], topics["progress_topic"]]
    await create_topics(tables, partitions=partitions, compacted=tables)
    return topics


def _split(env: dict[str, str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """APIPLUS_DISPATCH_* variables as (service fields, per-provider fields)."""
    fields: dict[str, str] = {}
    per_provider: dict[str, dict[str, str]] = {name: {} for name in providers.NAMES}
    for key, value in env.items():
        name = key.removeprefix("APIPLUS_DISPATCH_").lower()
        if not key.startswith("APIPLUS_DISPATCH_"):
            continue
        provider = next((p for p in providers.NAMES if name.startswith(p + "_")), None)
        if provider is None:
            fields[name] = value
        else:
            per_provider[provider][name.removeprefix(provider + "_")] = value
    return fields, per_provider


class InProcess:
    def __init__(self, topics: dict[str, str], simulator: RunningSimulator, **extra: str) -> None:
        env = dispatch_env(topics, simulator.url, **extra)
        fields, per_provider = _split(env)
        self.settings = DispatchSettings(kafka_bootstrap=env["APIPLUS_KAFKA_BOOTSTRAP"],
                                         redis_url=env["APIPLUS_REDIS_URL"], **fields)
        self.redis = redisio.connect(env["APIPLUS_REDIS_URL"])
        client = ProviderClient(providers.configure(per_provider), idempotent=self.settings.idempotent,
                                timeout_seconds=self.settings.http_timeout_seconds,
                                max_in_flight=self.settings.max_in_flight)
        self.dispatcher = Dispatcher(self.settings, KafkaClients(KafkaClientConfig(self.settings.kafka_bootstrap)),
                                     RedisRecordStore(self.redis, self.settings.dedupe_ttl_seconds), client,
                                     DispatchMetrics(CollectorRegistry()))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dispatcher:
        self.task = asyncio.create_task(self.dispatcher.run())
        await wait_for(lambda: self.dispatcher.is_ready() and bool(self.dispatcher.commits.trackers), timeout=30)
        return self.dispatcher

    async def __aexit__(self, *exc: object) -> None:
        self.dispatcher.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)
        await self.redis.aclose()


async def _done(topics: dict[str, str], group_id: str) -> None:
    """dispatch has committed past every command (and retry) so far: each is finished for good, none will be
    taken up or sent again, and every result and dead letter of theirs is written."""
    await caught_up(group_id, topics["commands_topic"], topics["retry_topic"], timeout=90)


def _terminal(results: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = collections.defaultdict(list)
    for r in results:
        if r["state"] in ("sent", "rejected", "failed", "expired"):
            out[r["command_id"].removeprefix(f"{RUN}-")].append(r["state"])
    return out


async def test_redelivered_command_sends_once(simulator: RunningSimulator) -> None:
    topics = await _topics()
    await produce(topics["registry_topic"], [(b"ch-a", channel_row("ch-a", TOKEN))])
    async with InProcess(topics, simulator) as dispatcher:
        cmd = text_command("cmd-redelivered", "ch-a", TOKEN)
        await produce(topics["commands_topic"], [(b"ch-a", cmd), (b"ch-a", cmd)])
        await wait_for(lambda: simulator.deliveries()["cmd-redelivered"] >= 1)
        await _done(topics, dispatcher.settings.group_id)  # both copies finished: the send is recorded
        await produce(topics["commands_topic"], [(b"ch-a", cmd)])  # a third copy, well after the send
        await _done(topics, dispatcher.settings.group_id)
    assert simulator.deliveries()["cmd-redelivered"] == 1
    results = await read_to_end(topics["results_topic"], settled=True)
    assert _terminal(results)["cmd-redelivered"] == ["sent"]
    sent = next(r for r in results if r["state"] == "sent")
    assert sent["provider_message_id"].startswith("SIM")


async def test_wrong_and_missing_tokens_are_refused(simulator: RunningSimulator) -> None:
    topics = await _topics()
    await produce(topics["registry_topic"], [(b"ch-b", channel_row("ch-b", TOKEN)),
                                             (b"ch-plain", channel_row("ch-plain", TOKEN, mode="plain"))])
    async with InProcess(topics, simulator) as dispatcher:
        wrong = text_command("cmd-wrong", "ch-b", "not-the-token")
        missing = {k: v for k, v in text_command("cmd-missing", "ch-b", TOKEN).items() if k != "token"}
        other = text_command("cmd-unknown", "ch-nobody", TOKEN)
        buttons = {**text_command("cmd-plus", "ch-plain", TOKEN),
                   "message": {"kind": "buttons", "body": "?", "buttons": [{"id": "1", "title": "Sim"}]}}
        await produce(topics["commands_topic"], [(b"ch-b", wrong), (b"ch-b", missing), (b"ch-nobody", other),
                                                 (b"ch-plain", buttons)])
        await _done(topics, dispatcher.settings.group_id)
        results = await read_to_end(topics["results_topic"], settled=True)
        dlq = await read_to_end(topics["commands_topic"] + ".dlq", settled=True)
    codes = {r["command_id"].removeprefix(f"{RUN}-"): r["error"]["code"] for r in results if r["state"] == "rejected"}
    assert codes == {"cmd-wrong": "unauthorized", "cmd-missing": "missing_field", "cmd-unknown": "unauthorized",
                     "cmd-plus": "plus_required"}
    assert len(results) == 4  # one refusal each, nothing more
    assert simulator.entries() == []
    everything = repr(results) + repr(dlq)
    assert TOKEN not in everything
    assert "not-the-token" not in everything
    assert len(dlq) == 4


async def test_held_commands_are_sent_in_order_on_reconnect(simulator: RunningSimulator) -> None:
    topics = await _topics()
    await produce(topics["registry_topic"], [(b"ch-h", channel_row("ch-h", TOKEN))])
    await produce(topics["health_topic"], [(b"ch-h", {"channel_id": "ch-h", "state": "closed"})])
    async with InProcess(topics, simulator):
        await produce(topics["commands_topic"],
                      [(b"ch-h", text_command(f"held-{i}", "ch-h", TOKEN, body=f"m{i}")) for i in range(5)])
        held = await read_all(topics["results_topic"], expect=10)  # 5 queued + 5 held
        assert collections.Counter(r["state"] for r in held) == {"queued": 5, "held": 5}
        assert simulator.entries() == []
        await produce(topics["health_topic"], [(b"ch-h", {"channel_id": "ch-h", "state": "open"})])
        await wait_for(lambda: sum(simulator.deliveries().values()) == 5)
    order = [e["idempotency_key"].removeprefix(f"{RUN}-") for e in simulator.entries()]
    assert order == [f"held-{i}" for i in range(5)]


async def test_paced_channel_does_not_delay_another_in_the_same_partition(simulator: RunningSimulator) -> None:
    topics = await _topics(partitions=1)  # one partition: both channels share it
    await produce(topics["registry_topic"], [
        (b"slow", channel_row("slow", TOKEN, pacing={"min_gap_ms": 1500, "jitter_ms": 0, "hourly_cap": 1000})),
        (b"fast", channel_row("fast", TOKEN, pacing={"min_gap_ms": 0, "jitter_ms": 0, "hourly_cap": 1000})),
    ])
    async with InProcess(topics, simulator, APIPLUS_DISPATCH_PACING_ENABLED="true"):
        records = [(b"slow", text_command(f"slow-{i}", "slow", TOKEN)) for i in range(3)]
        records += [(b"fast", text_command(f"fast-{i}", "fast", TOKEN)) for i in range(3)]
        await produce(topics["commands_topic"], records)
        await wait_for(lambda: sum(simulator.deliveries().values()) == 6, timeout=20)
    times = {e["idempotency_key"].removeprefix(f"{RUN}-"): e["ts"] for e in simulator.entries()}
    assert times["slow-1"] - times["slow-0"] >= 1.4
    assert times["slow-2"] - times["slow-1"] >= 1.4
    # The fast channel's commands, behind the slow ones in the partition, went out before slow-1.
    assert max(times[f"fast-{i}"] for i in range(3)) < times["slow-1"]


async def test_kill9_during_burst_sends_each_command_exactly_once(simulator: RunningSimulator,
                                                                  tmp_path: Path) -> None:
    topics = await _topics()
    channels = [f"burst-{i}" for i in range(20)]
    await produce(topics["registry_topic"], [(c.encode(), channel_row(c, TOKEN)) for c in channels])
    commands = [(c.encode(), text_command(f"{c}-cmd-{n}", c, TOKEN)) for n in range(15) for c in channels]
    env = dispatch_env(topics, simulator.url)
    # Slow enough that a restarted worker does not finish the burst before the second kill on a quiet machine.
    simulator.sim.base_latency_ms = 30
    log = tmp_path / "dispatch.log"
    worker = start_worker("dispatch", env, log)
    try:
        await produce(topics["commands_topic"], commands)
        await wait_for(lambda: sum(simulator.deliveries().values()) >= 60, timeout=60)
        assert worker.poll() is None, log.read_text()[-3000:]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        sent_before_restart = sum(simulator.deliveries().values())
        await produce(topics["commands_topic"], commands[:40])  # upstream redelivers some
        worker = start_worker("dispatch", env, log)
        await wait_for(lambda: len(simulator.deliveries()) == len(commands), timeout=90)
        await _done(topics, env["APIPLUS_DISPATCH_GROUP_ID"])  # no command will be sent again from here
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    deliveries = simulator.deliveries()
    assert sent_before_restart < len(commands), "the kill came after the burst: nothing was tested"
    assert len(deliveries) == len(commands)
    assert set(deliveries.values()) == {1}
    results = await read_to_end(topics["results_topic"], settled=True)
    terminal = _terminal(results)
    assert {cid: states for cid, states in terminal.items() if len(states) > 1} == {}
    assert {cid: states[0] for cid, states in terminal.items()} == {f"{c}-cmd-{n}": "sent" for n in range(15)
                                                                       for c in channels}
    assert worker.returncode == 0, log.read_text()[-3000:]


async def test_provider_faults_retry_then_send_once_and_refusals_fail(simulator: RunningSimulator) -> None:
    topics = await _topics()
    await produce(topics["registry_topic"], [(b"ch-f", channel_row("ch-f", TOKEN))])
    async with InProcess(topics, simulator, APIPLUS_DISPATCH_BACKOFF_BASE_SECONDS="0.05") as dispatcher:
        simulator.sim.faults = Faults(mode="503", remaining=2)  # two failures, then the provider recovers
        await produce(topics["commands_topic"], [(b"ch-f", text_command("fault-503", "ch-f", TOKEN))])
        await wait_for(lambda: simulator.deliveries()["fault-503"] == 1)
        simulator.sim.faults = Faults(mode="429", retry_after=0.1, remaining=1)
        await produce(topics["commands_topic"], [(b"ch-f", text_command("fault-429", "ch-f", TOKEN))])
        await wait_for(lambda: simulator.deliveries()["fault-429"] == 1)
        expired = {**text_command("too-late", "ch-f", TOKEN), "not_after": "2020-01-01T00:00:00Z"}
        await produce(topics["commands_topic"], [(b"ch-f", expired)])
        await _done(topics, dispatcher.settings.group_id)
        results = await read_to_end(topics["results_topic"], settled=True)
    terminal = _terminal(results)
    assert terminal["fault-503"] == ["sent"]
    assert terminal["fault-429"] == ["sent"]
    assert terminal["too-late"] == ["expired"]
    assert simulator.sim.received == 2 + 1 + 1 + 1  # 2 refused + 1 sent, 1 refused + 1 sent
    assert simulator.deliveries()["too-late"] == 0


async def test_provider_4xx_ends_failed_with_the_status(simulator: RunningSimulator) -> None:
    topics = await _topics()
    await produce(topics["registry_topic"], [(b"ch-x", channel_row("ch-x", TOKEN, provider="cloudapi"))])
    # cloudapi has no token configured for this worker: the simulator answers 401 like the provider.
    async with InProcess(topics, simulator, APIPLUS_DISPATCH_CLOUDAPI_URL=simulator.url,
                         APIPLUS_DISPATCH_CLOUDAPI_TOKEN="") as dispatcher:
        await produce(topics["commands_topic"], [(b"ch-x", text_command("refused", "ch-x", TOKEN))])
        await _done(topics, dispatcher.settings.group_id)
        results = await read_to_end(topics["results_topic"], settled=True)
    failed = next((r for r in results if r["state"] == "failed"), None)
    assert failed is not None, [(r["state"], r.get("error")) for r in results]
    assert failed["error"]["code"] == "provider_rejected"
    assert failed["error"]["provider_status"] == 401


async def test_channel_with_unknown_connection_state_is_not_held(simulator: RunningSimulator) -> None:
    topics = await _topics()
    await produce(topics["registry_topic"], [(b"ch-u", channel_row("ch-u", TOKEN))])
    # ingest publishes channels first seen through a message with state "unknown".
    await produce(topics["health_topic"], [(b"ch-u", {"channel_id": "ch-u", "state": "unknown"})])
    async with InProcess(topics, simulator):
        await produce(topics["commands_topic"], [(b"ch-u", text_command("unknown-state", "ch-u", TOKEN))])
        await wait_for(lambda: simulator.deliveries()["unknown-state"] == 1, timeout=20)


async def test_kill9_twice_during_a_burst_with_refusals_leaves_every_result_exactly_once(
        simulator: RunningSimulator, tmp_path: Path) -> None:
    """Results, dead letters and offsets commit in one transaction per partition: read with
    read_committed, no result is doubled and none is missing, refusals included."""
    topics = await _topics()
    channels = [f"once-{i}" for i in range(20)]
    await produce(topics["registry_topic"], [(c.encode(), channel_row(c, TOKEN)) for c in channels])
    valid = [(c, f"{c}-cmd-{n}") for n in range(15) for c in channels]
    commands: list[tuple[bytes, dict[str, Any]]] = []
    refused: set[str] = set()
    for i, (channel, name) in enumerate(valid):
        commands.append((channel.encode(), text_command(name, channel, TOKEN)))
        if i % 10 == 3:
            refused.add(f"{name}-bad")
            commands.append((channel.encode(), text_command(f"{name}-bad", channel, "not-the-token")))
        elif i % 10 == 7:
            refused.add(f"{name}-4b")
            commands.append((channel.encode(), {**text_command(f"{name}-4b", channel, TOKEN), "message": {
                "kind": "buttons", "body": "?", "buttons": [{"id": str(b), "title": f"B{b}"} for b in range(4)]}}))
    env = dispatch_env(topics, simulator.url)
    simulator.sim.base_latency_ms = 15
    log = tmp_path / "dispatch.log"
    worker = start_worker("dispatch", env, log)
    sent_at_kill = []
    try:
        await produce(topics["commands_topic"], commands)
        for kill_after in (60, 160):
            await wait_for(lambda n=kill_after: sum(simulator.deliveries().values()) >= n, timeout=60)
            assert worker.poll() is None, log.read_text()[-3000:]
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            sent_at_kill.append(sum(simulator.deliveries().values()))
            worker = start_worker("dispatch", env, log)
        await wait_for(lambda: len(simulator.deliveries()) == len(valid), timeout=90)
        await _done(topics, env["APIPLUS_DISPATCH_GROUP_ID"])
        results = await read_to_end(topics["results_topic"], settled=True)
        dlq = await read_to_end(topics["commands_topic"] + ".dlq", settled=True)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    # At least the first kill must land mid-burst; on a loaded machine the restarted worker can finish the
    # burst before the second, which then tests a restart with nothing left in flight.
    assert sent_at_kill[0] < len(valid), "the first kill came after the burst: nothing was tested"
    seen = collections.Counter((r["command_id"].removeprefix(f"{RUN}-"), r["state"]) for r in results)
    want = collections.Counter({**{(name, state): 1 for _, name in valid for state in ("queued", "sent")},
                                **{(name, "rejected"): 1 for name in refused}})
    duplicates = {k: n for k, n in seen.items() if n > 1}
    missing = set(want) - set(seen)
    assert (duplicates, missing) == ({}, set())
    assert seen == want
    assert len({r["event_id"] for r in results}) == len(results)
    assert len(dlq) == len(refused) == len({d["event_id"] for d in dlq})
    assert set(simulator.deliveries().values()) == {1}
