"""dispatch's side of the closed loop through the lanes rig: sent messages remembered, unknown sends
settled by the gateway's echo off the lane, never sent twice. Manual clock, fake loop store; no Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.dispatch.core import Channel, Command
from services.dispatch.loop import EchoWaitInterrupted
from services.dispatch.record import SendRecord, SendState, sending
from services.dispatch.sender import SendUnavailable
from tests.unit.test_dispatch_lanes import T0, TP, Rig


class FakeLoop:
    """Remembers what dispatch asked it to; answers echo waits when the test says so."""

    def __init__(self, echoes: dict[str, str | None] | None = None) -> None:
        self.remembered: list[tuple[str, str, str | None]] = []
        self.echoes = echoes or {}  # command id -> echoed message id (None: the window closes)
        self.waits: list[tuple[str, float]] = []
        self.release = asyncio.Event()

    async def remember(self, command: Command, channel: Channel, message_id: str,
                       resolved_by: str | None = None) -> None:
        self.remembered.append((command.command_id, message_id, resolved_by))

    async def await_echo(self, command: Command, channel: Channel, attempt_at: float,
                         stopping: Callable[[], bool] = lambda: False) -> str | None:
        self.waits.append((command.command_id, attempt_at))
        await self.release.wait()
        if stopping():
            raise EchoWaitInterrupted(command.command_id)
        return self.echoes.get(command.command_id)


def rig_with(loop: FakeLoop, idempotent: bool = False) -> Rig:
    rig = Rig(idempotent=idempotent)
    rig.delivery.loop = loop
    return rig


def ends(rig: Rig) -> dict[str, dict[str, object]]:
    return {v["command_id"]: v for v in rig.producer.on("results") if v["state"] not in ("queued", "held")}


async def test_a_sent_command_is_remembered_before_its_result() -> None:
    loop = FakeLoop()
    rig = rig_with(loop, idempotent=True)
    await rig.add("c")
    assert loop.remembered == [("c", "SIM1", None)]
    assert "resolved_by" not in ends(rig)["c"]


async def test_unknown_send_waits_off_its_lane_and_ends_sent_by_echo() -> None:
    loop = FakeLoop({"crashed": "ECHO1"})
    rig = rig_with(loop)
    await rig.add("crashed", record=sending(T0 - 5))  # a crash left the record SENDING 5 s ago
    await rig.add("next")
    assert loop.waits == [("crashed", T0 - 5)]  # the window counts from the attempt, not the restart
    assert rig.sent() == ["next"]  # the lane went on; the unknown one was not sent again
    assert "crashed" not in ends(rig)
    assert rig.commits.position(TP) == 0  # its offset waits for the outcome
    loop.release.set()
    await rig.settle()
    end = ends(rig)["crashed"]
    assert (end["state"], end["provider_message_id"], end["resolved_by"]) == ("sent", "ECHO1", "echo")
    assert ("crashed", "ECHO1", "echo") in loop.remembered
    assert rig.state("crashed") is SendState.DONE
    assert rig.commits.position(TP) == 2
    assert rig.sent() == ["next"]


async def test_no_echo_in_the_window_ends_failed_delivery_unknown() -> None:
    loop = FakeLoop({"crashed": None})
    rig = rig_with(loop)
    await rig.add("crashed", record=sending(T0))
    loop.release.set()
    await rig.settle()
    end = ends(rig)["crashed"]
    assert (end["state"], end["error"]["code"]) == ("failed", "delivery_unknown")  # type: ignore[index]
    assert rig.sent() == []


async def test_timeout_on_a_provider_without_idempotency_awaits_the_echo_from_the_attempt() -> None:
    loop = FakeLoop({"slow": "ECHO2"})
    rig = rig_with(loop)
    rig.provider.script = [SendUnavailable("timeout", ambiguous=True)]
    await rig.add("slow")
    assert loop.waits == [("slow", T0)]
    loop.release.set()
    await rig.settle()
    assert ends(rig)["slow"]["provider_message_id"] == "ECHO2"
    assert rig.sent() == ["slow"]  # one request, never a second


async def test_a_copy_of_a_command_awaiting_its_echo_does_not_start_another_wait() -> None:
    loop = FakeLoop({"crashed": "ECHO3"})
    rig = rig_with(loop)
    await rig.add("crashed", record=sending(T0))
    await rig.add("crashed", record=sending(T0))
    assert [w[0] for w in loop.waits] == ["crashed"]
    loop.release.set()
    await rig.settle()
    assert [v["state"] for v in rig.producer.on("results") if v["command_id"] == "crashed"
            and v["state"] == "sent"] == ["sent"]


async def test_stopping_while_waiting_leaves_the_command_for_redelivery() -> None:
    loop = FakeLoop({"crashed": "ECHO4"})
    rig = rig_with(loop)
    await rig.add("crashed", record=sending(T0))
    rig.delivery.stopping = True
    loop.release.set()
    await rig.settle()
    assert "crashed" not in ends(rig)
    assert rig.commits.position(TP) == 0


async def test_revoked_partition_cancels_its_echo_waits() -> None:
    loop = FakeLoop({"crashed": "ECHO5"})
    rig = rig_with(loop)
    await rig.add("crashed", record=sending(T0))
    await rig.delivery.cancel_waits([TP])
    loop.release.set()
    await rig.settle()
    assert "crashed" not in ends(rig)


def test_sending_record_keeps_the_attempt_time() -> None:
    assert SendRecord.from_json(sending(123.5).to_json()).at == 123.5
    assert SendRecord.from_json(b'{"state": "sending"}').at is None
