"""The closed loop through the real Kafka, Redis and simulator: dispatch -> simulator -> raw -> ingest -> both.

The simulator accepts the sends, then emits the gateway's status, echo and reply webhooks for them
into ingest's raw topic; ingest and dispatch run as real processes (so they can be killed with -9).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.simloop import AutoEmit, GatewayLoop
from services.dispatch.simulator import Simulator
from tests.integration.dispatchtools import RUN, RunningSimulator, channel_row, cid, dispatch_env, dispatch_topics
from tests.integration.ingesttools import ingest_topics
from tests.integration.kafkatools import (
    bootstrap,
    caught_up,
    create_topics,
    produce,
    read_to_end,
    redis_url,
    start_worker,
    unique,
    wait_for,
)

TOKEN = "tok-" + "l00p" * 6
CUSTOMER = "5511988887777"
BUTTONS = {"kind": "buttons", "body": "Confirma o pedido #1001?",
           "buttons": [{"id": "confirm-1001", "title": "Confirmar"}, {"id": "cancel-1001", "title": "Cancelar"}]}
LIST = {"kind": "list", "body": "Como quer pagar?", "button": "Opções", "sections": [
    {"rows": [{"id": "pix", "title": "Pix"}, {"id": "boleto", "title": "Boleto"},
              {"id": "cartao", "title": "Cartão de crédito"}]}]}
PROVIDER_ENV = {"APIPLUS_DISPATCH_CLOUDAPI_TOKEN": "cloudapi-key-0123456789",
                "APIPLUS_DISPATCH_EVOLUTION_APIKEY": "evolution-key-0123456789",
                "APIPLUS_DISPATCH_UAZAPI_TOKEN": "uazapi-key-0123456789"}


def command(name: str, channel_id: str, message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"command_id": cid(name), "channel_id": channel_id, "token": TOKEN, "to": CUSTOMER, "message": message,
            "fallback": "text", **extra}


class Stack:
    """Topics, the simulator with its webhook side, and the ingest and dispatch processes."""

    def __init__(self, tmp_path: Path, ingest: dict[str, str], **dispatch_extra: str) -> None:
        self.ingest_topics = ingest
        self.dispatch_topics = dispatch_topics()
        self.tmp_path = tmp_path
        self.gateway = GatewayLoop(bootstrap(), self.ingest_topics["raw_topic"])
        self.simulator = RunningSimulator(tmp_path / "simulator.jsonl")
        self.simulator.sim = Simulator(self.simulator.log_path, loop=self.gateway)
        url = self.simulator.url
        self.dispatch_env = dispatch_env(
            self.dispatch_topics, url,
            APIPLUS_DISPATCH_EVENTS_TOPIC=self.ingest_topics["events_topic"],
            APIPLUS_DISPATCH_RECEIPTS_GROUP_ID=unique("receipts"),
            APIPLUS_DISPATCH_CLOUDAPI_URL=url, APIPLUS_DISPATCH_EVOLUTION_URL=url, APIPLUS_DISPATCH_UAZAPI_URL=url,
            APIPLUS_DISPATCH_ECHO_POLL_SECONDS="0.2",
            **PROVIDER_ENV, **dispatch_extra,
        )
        self.ingest_env = {
            "APIPLUS_KAFKA_BOOTSTRAP": bootstrap(), "APIPLUS_REDIS_URL": redis_url(),
            "APIPLUS_INGEST_HTTP_PORT": "0", "APIPLUS_INGEST_GROUP_ID": unique("ingest"),
            "APIPLUS_INGEST_HEALTH_GROUP_ID": unique("ingest-health"), "APIPLUS_INGEST_SUBSCRIBE_EVOLUTION": "false",
            **{f"APIPLUS_INGEST_{k.upper()}": v for k, v in self.ingest_topics.items()},
        }
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self) -> None:
        d = self.dispatch_topics
        await create_topics([d["commands_topic"], d["retry_topic"], d["results_topic"], d["commands_topic"] + ".dlq"])
        tables = [d["registry_topic"], d["health_topic"], d["progress_topic"]]
        await create_topics(tables, compacted=tables)
        await self.gateway.start()
        await self.simulator.start()
        self.start_worker("ingest")
        self.start_worker("dispatch")

    def start_worker(self, service: str) -> None:
        env = self.ingest_env if service == "ingest" else self.dispatch_env
        self.workers[service] = start_worker(service, env, self.tmp_path / f"{service}.log")

    def kill9(self, service: str) -> None:
        worker = self.workers[service]
        assert worker.poll() is None, self.log(service)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

    def log(self, service: str) -> str:
        path = self.tmp_path / f"{service}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    async def stop(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        await self.simulator.stop()
        await self.gateway.stop()

    async def register(self, *rows: dict[str, Any]) -> None:
        await produce(self.dispatch_topics["registry_topic"], [(r["channel_id"].encode(), r) for r in rows])

    async def send(self, *commands: dict[str, Any]) -> None:
        await produce(self.dispatch_topics["commands_topic"], [(c["channel_id"].encode(), c) for c in commands])

    async def results(self, settled: bool = False) -> list[dict[str, Any]]:
        """The results topic as it is now; `settled`: once no transaction is open on it (see `scan`)."""
        return await read_to_end(self.dispatch_topics["results_topic"], settled=settled)

    async def settled(self, timeout: float = 90) -> None:
        """Every webhook emitted so far has gone all the way round: ingest has committed past each raw
        record, then dispatch's receipts stage past each canonical event. Both commit their consumed
        offsets in the transaction of their outputs, so every delivery those webhooks will ever make is
        in the results topic now: a check for "nothing more" can read it without a quiet window."""
        await caught_up(self.ingest_env["APIPLUS_INGEST_GROUP_ID"], self.ingest_topics["raw_topic"], timeout=timeout)
        await caught_up(self.dispatch_env["APIPLUS_DISPATCH_RECEIPTS_GROUP_ID"], self.ingest_topics["events_topic"],
                        timeout=timeout)

    async def received(self, channel_id: str, expect: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The channel's `message.received` events, once there are at least `expect`."""
        found: list[dict[str, Any]] = []

        async def enough() -> bool:
            events = await read_to_end(self.ingest_topics["events_topic"])
            found[:] = [e for e in events if e["type"] == "message.received" and e["channel_id"] == channel_id]
            return len(found) >= expect

        try:
            await wait_for(enough, timeout=timeout, interval=0.3)
        except AssertionError:
            raise AssertionError(f"{len(found)} of {expect} received: {found}\n{self.log('ingest')}") from None
        return found

    async def sent_id(self, name: str, timeout: float = 60) -> str:
        """The provider message id of a command once its `sent` result is out."""
        found: dict[str, str] = {}

        async def done() -> bool:
            for r in await self.results():
                if r["type"] == "dispatch.result" and r["state"] == "sent" and r["command_id"] == cid(name):
                    found["id"] = r["provider_message_id"]
            return "id" in found

        try:
            await wait_for(done, timeout=timeout, interval=0.3)
        except AssertionError:
            raise AssertionError(f"{name} not sent: {await self.results()}\n{self.log('dispatch')}") from None
        return found["id"]

    async def emit(self, message_id: str, *events: dict[str, Any]) -> None:
        acc = self.gateway.accepted[message_id]
        for payload in self.gateway.payloads(acc, list(events)):
            await self.gateway.emit(acc, payload)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **dispatch_extra: str) -> AsyncIterator[Stack]:
    s = Stack(tmp_path, await ingest_topics(), **dispatch_extra)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture(scope="module")
async def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One stack (topics, simulator, both workers) for the module's tests: each test has channels, commands
    and messages of its own and reads only those back, so they need no worker start of their own."""
    async with running(tmp_path_factory.mktemp("loop")) as s:
        yield s


@pytest.fixture
async def stack(shared_stack: Stack) -> AsyncIterator[Stack]:
    """The module's stack as a test finds it: both workers running, the simulator emitting nothing by itself."""
    for service, worker in shared_stack.workers.items():
        if worker.poll() is not None:  # an earlier test failed with it down: start it again
            shared_stack.start_worker(service)
    shared_stack.gateway.auto = AutoEmit()
    shared_stack.gateway.default_instance = "simulator"
    yield shared_stack
    for service, worker in shared_stack.workers.items():
        assert worker.poll() is None, f"{service} exited during the test:\n{shared_stack.log(service)}"


def deliveries(results: list[dict[str, Any]], name: str) -> list[str]:
    return [r["status"] for r in results if r["type"] == "dispatch.delivery" and r["command_id"] == cid(name)]


def channel(name: str, provider: str, mode: str = "plus") -> dict[str, Any]:
    return channel_row(f"{name}-{RUN}", TOKEN, provider=provider, mode=mode)


def receipts_of(results: list[dict[str, Any]], channel_id: str, *message_ids: str) -> list[dict[str, Any]]:
    """The deliveries on a test's channel or about its messages (the stack is shared by the module's tests)."""
    return [r for r in results if r["type"] == "dispatch.delivery"
            and (r["channel_id"] == channel_id or r["provider_message_id"] in message_ids)]


# --- 1. delivery receipts ----------------------------------------------------------------------------
async def test_sent_buttons_get_delivered_then_read_once_across_kill9_of_each_worker(stack: Stack) -> None:
    ch = channel("receipts", "evolution")
    await stack.register(ch)
    # The marker: a second message on the same channel, so its statuses, deliveries and their inputs share
    # every partition with the first's (all keyed by channel).
    await stack.send(command("receipts-buttons", ch["channel_id"], BUTTONS),
                     command("receipts-marker", ch["channel_id"], {"kind": "text", "body": "Pedido enviado"}))
    message_id = await stack.sent_id("receipts-buttons")
    marker_id = await stack.sent_id("receipts-marker")
    await stack.emit(message_id, {"type": "status", "state": "sent"}, {"type": "status", "state": "delivered"})
    stack.kill9("ingest")  # the statuses may be mid-normalisation
    stack.start_worker("ingest")
    await wait_for(lambda: _has(stack, "receipts-buttons", "delivered"), timeout=60, interval=0.5)
    await stack.emit(message_id, {"type": "status", "state": "delivered"}, {"type": "status", "state": "read"})
    stack.kill9("dispatch")  # the read may be mid-transaction in the receipts stage
    stack.start_worker("dispatch")
    await wait_for(lambda: _has(stack, "receipts-buttons", "read"), timeout=60, interval=0.5)
    await stack.emit(message_id, {"type": "status", "state": "read"}, {"type": "status", "state": "delivered"},
                     {"type": "status", "state": "played"})
    stack.kill9("ingest")
    stack.start_worker("ingest")
    stack.kill9("dispatch")
    stack.start_worker("dispatch")
    # The last copies have gone all the way round once the marker's delivery, emitted after them through the
    # restarted workers on the same partitions, is out, and both stages have committed past every input.
    await stack.emit(marker_id, {"type": "status", "state": "delivered"})
    await wait_for(lambda: _has(stack, "receipts-marker", "delivered"), timeout=90, interval=0.3)
    await stack.settled()
    results = await stack.results(settled=True)
    assert deliveries(results, "receipts-buttons") == ["delivered", "read"]
    assert deliveries(results, "receipts-marker") == ["delivered"]
    delivered = receipts_of(results, ch["channel_id"], message_id, marker_id)
    assert {r["provider_message_id"] for r in delivered} == {message_id, marker_id}
    assert {r["channel_id"] for r in delivered} == {ch["channel_id"]}


async def _has(stack: Stack, name: str, status: str) -> bool:
    return status in deliveries(await stack.results(), name)


@pytest.mark.parametrize("provider", ["cloudapi", "evolution", "uazapi"])
async def test_read_without_delivered_emits_both_in_each_dialect(stack: Stack, provider: str) -> None:
    ch = channel(f"dialect-{provider}", provider)
    stack.gateway.default_instance = ch["channel_id"]  # uazapi's path does not name the instance
    await stack.register(ch)
    await stack.send(command(f"read-first-{provider}", ch["channel_id"], {"kind": "text", "body": "Seu pedido saiu"}))
    message_id = await stack.sent_id(f"read-first-{provider}")
    await stack.emit(message_id, {"type": "status", "state": "read"}, {"type": "status", "state": "delivered"})
    await wait_for(lambda: _has(stack, f"read-first-{provider}", "read"), timeout=60, interval=0.3)
    await stack.settled()  # the later `delivered` has gone round too
    assert deliveries(await stack.results(settled=True), f"read-first-{provider}") == ["delivered", "read"]


async def test_statuses_of_messages_dispatch_did_not_send_are_left_alone(stack: Stack) -> None:
    ch = channel("foreign", "evolution")
    await stack.register(ch)
    await stack.send(command("foreign-known", ch["channel_id"], {"kind": "text", "body": "oi"}))
    known = await stack.sent_id("foreign-known")
    stack.gateway.accepted["SENTBYPHONE1"] = dataclasses.replace(stack.gateway.accepted[known],
                                                                 message_id="SENTBYPHONE1")
    await stack.emit("SENTBYPHONE1", {"type": "status", "state": "read"})
    await stack.emit(known, {"type": "status", "state": "failed"})
    await wait_for(lambda: _has(stack, "foreign-known", "failed"), timeout=60, interval=0.3)
    await stack.settled()
    receipts = receipts_of(await stack.results(settled=True), ch["channel_id"], known, "SENTBYPHONE1")
    assert [(r["provider_message_id"], r["status"]) for r in receipts] == [(known, "failed")]
    assert receipts[0]["error"]["code"] == "provider_failed"  # Evolution's ERROR carries no code


# --- 2. replies --------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["cloudapi", "evolution", "uazapi"])
async def test_button_and_list_replies_carry_in_reply_to(stack: Stack, provider: str) -> None:
    ch = channel(f"replies-{provider}", provider)
    stack.gateway.default_instance = ch["channel_id"]
    await stack.register(ch)
    await stack.send(command(f"reply-buttons-{provider}", ch["channel_id"], BUTTONS),
                     command(f"reply-list-{provider}", ch["channel_id"], LIST))
    buttons_id = await stack.sent_id(f"reply-buttons-{provider}")
    list_id = await stack.sent_id(f"reply-list-{provider}")
    await stack.emit(buttons_id, {"type": "reply", "kind": "button_reply", "reply_id": "confirm-1001",
                                  "title": "Confirmar"})
    await stack.emit(list_id, {"type": "reply", "kind": "list_reply", "reply_id": "boleto", "title": "Boleto"})
    received = await stack.received(ch["channel_id"], expect=2)
    by_kind = {e["message"]["kind"]: e["message"] for e in received}
    assert by_kind["button_reply"]["reply"]["id"] == "confirm-1001"
    assert by_kind["button_reply"]["in_reply_to"] == {"command_id": cid(f"reply-buttons-{provider}"),
                                                      "provider_message_id": buttons_id}
    assert by_kind["list_reply"]["reply"]["id"] == "boleto"
    assert by_kind["list_reply"]["in_reply_to"] == {"command_id": cid(f"reply-list-{provider}"),
                                                    "provider_message_id": list_id}
    assert "via" not in by_kind["button_reply"]["reply"]  # a real press


# --- 3. typed answers in plain mode ------------------------------------------------------------------
async def test_plain_channel_typed_number_and_title_come_back_as_the_option(stack: Stack) -> None:
    ch = channel("plain", "evolution", mode="plain")
    await stack.register(ch)
    await stack.send(command("plain-buttons", ch["channel_id"], BUTTONS))
    message_id = await stack.sent_id("plain-buttons")
    assert "2. Cancelar" in stack.gateway.accepted[message_id].text  # sent as numbered text
    for typed in ("2", "cancelar", "7", "quero falar com alguém"):
        await stack.emit(message_id, {"type": "reply", "kind": "text", "text": typed, "quote": False})
    received = await stack.received(ch["channel_id"], expect=4)
    by_text = {e["message"]["text"]: e["message"] for e in received}
    for typed in ("2", "cancelar"):
        message = by_text[typed]
        assert message["kind"] == "button_reply", message
        assert message["reply"] == {"id": "cancel-1001", "title": "Cancelar", "via": "typed"}
        assert message["in_reply_to"] == {"command_id": cid("plain-buttons"), "provider_message_id": message_id}
    for typed in ("7", "quero falar com alguém"):
        assert by_text[typed]["kind"] == "text"
        assert "reply" not in by_text[typed]
        assert "in_reply_to" not in by_text[typed]


async def test_only_the_latest_offer_is_answerable(stack: Stack) -> None:
    ch = channel("latest", "evolution", mode="plain")
    await stack.register(ch)
    await stack.send(command("first-offer", ch["channel_id"], BUTTONS))
    first = await stack.sent_id("first-offer")
    await stack.send(command("second-offer", ch["channel_id"], LIST))
    await stack.sent_id("second-offer")
    await stack.emit(first, {"type": "reply", "kind": "text", "text": "3", "quote": False},
                     {"type": "reply", "kind": "text", "text": "Confirmar", "quote": False})
    received = await stack.received(ch["channel_id"], expect=2)
    by_text = {e["message"]["text"]: e["message"] for e in received}
    assert by_text["3"]["kind"] == "list_reply"
    assert by_text["3"]["reply"]["id"] == "cartao"
    assert by_text["3"]["in_reply_to"]["command_id"] == cid("second-offer")
    assert by_text["Confirmar"]["kind"] == "text"  # a title of the older offer


# --- 4. unknown outcomes settled by the echo -----------------------------------------------------------
async def test_kill9_during_burst_on_a_provider_without_idempotency(tmp_path: Path) -> None:
    async with running(tmp_path, APIPLUS_DISPATCH_IDEMPOTENT_PROVIDERS="",
                       APIPLUS_DISPATCH_ECHO_WINDOW_SECONDS="20") as stack:
        await _burst_killed_mid_way(stack)


async def _burst_killed_mid_way(stack: Stack) -> None:
    channels = [channel(f"echo-{i}", "evolution") for i in range(12)]
    await stack.register(*channels)
    stack.simulator.sim.base_latency_ms = 40  # widen the window between the request and the `sent` record
    stack.gateway.auto = AutoEmit(echo=True)
    commands = [command(f"echo-{i}-{n}", c["channel_id"], {"kind": "text", "body": f"Pedido {n} de {i}: ok"})
                for n in range(10) for i, c in enumerate(channels)]
    await stack.send(*commands)
    await wait_for(lambda: len(stack.simulator.deliveries()) >= 25, timeout=60)
    stack.kill9("dispatch")
    before = len(stack.simulator.deliveries())
    stack.start_worker("dispatch")
    names = {c["command_id"] for c in commands}

    async def all_ended() -> bool:
        return names <= _terminal(await stack.results()).keys()

    await wait_for(all_ended, timeout=150, interval=0.5)
    # Each command has ended; once dispatch has committed past every command, none is taken up again, and
    # every result it wrote is decided: a second terminal result, or a second send, would be out by now.
    await caught_up(stack.dispatch_env["APIPLUS_DISPATCH_GROUP_ID"], stack.dispatch_topics["commands_topic"],
                    stack.dispatch_topics["retry_topic"], timeout=60)
    assert before < len(commands), "the kill came after the burst: nothing was tested"
    sends = collections.Counter(e["idempotency_key"] for e in stack.simulator.entries())
    assert max(sends.values()) == 1, "a message was sent twice"
    accepted = {e["idempotency_key"]: e["response"]["key"]["id"] for e in stack.simulator.entries()}
    terminal = _terminal(await stack.results(settled=True))
    for command_id, states in terminal.items():
        assert len(states) == 1, states  # one terminal result, read_committed
        end = states[0]
        if command_id in accepted:  # the simulator received and echoed it
            assert end["state"] == "sent", end
            assert end["provider_message_id"] == accepted[command_id]
        else:
            assert (end["state"], end["error"]["code"]) == ("failed", "delivery_unknown"), end
    resolved = [s[0] for s in terminal.values() if s[0].get("resolved_by") == "echo"]
    print(f"echo test: {len(commands)} commands, {before} sent before the kill, {len(resolved)} resolved by echo, "
          f"{len(commands) - len(accepted)} never reached the simulator")


def _terminal(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in results:
        if r["type"] == "dispatch.result" and r["state"] in ("sent", "rejected", "failed", "expired"):
            out[r["command_id"]].append(r)
    return out
