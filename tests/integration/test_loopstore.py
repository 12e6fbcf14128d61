"""dispatch's loop store on the real Redis: what a sent command leaves behind, and echo claims."""

from __future__ import annotations

import time
import uuid

from apiplus import redisio
from apiplus.correlation import Echo, Offer, SentRecord, offer_key, sent_key
from services.dispatch.core import Channel, Command, parse_command, token_digest
from services.dispatch.loop import echo_keys
from services.dispatch.loopstore import LoopSettings, LoopStore
from tests.integration.kafkatools import redis_url

SETTINGS = LoopSettings(sent_ttl_seconds=600, offer_window_seconds=300, echo_window_seconds=2.0,
                        echo_poll_seconds=0.1)


def _command(command_id: str, body: str = "Pedido pronto") -> Command:
    return parse_command({"command_id": command_id, "channel_id": "ch", "token": "t", "to": "5511988887777",
                          "message": {"kind": "buttons", "body": body,
                                      "buttons": [{"id": "ok", "title": "Ok"}, {"id": "no", "title": "Não"}]},
                          "fallback": "text"})


async def test_remember_writes_the_sent_map_and_the_offer_with_their_ttls() -> None:
    redis = redisio.connect(redis_url())
    instance = f"inst-{uuid.uuid4().hex[:8]}"
    channel = Channel("ch", "t", token_digest("t"), "evolution", "plain", "active", provider_instance=instance)
    command = _command("c-remember")
    try:
        await LoopStore(redis, SETTINGS).remember(command, channel, "MSG-R")
        sent = SentRecord.decode(await redis.get(sent_key(instance, "MSG-R")))
        offer = Offer.decode(await redis.get(offer_key(instance, "5511988887777")))
        assert (sent.command_id, sent.channel_id, offer.provider_message_id) == ("c-remember", "ch", "MSG-R")
        assert 590 <= await redis.ttl(sent_key(instance, "MSG-R")) <= 600
        assert 290 <= await redis.ttl(offer_key(instance, "5511988887777")) <= 300
    finally:
        await redis.aclose()


async def test_an_echo_resolves_one_command_only_and_a_restart_finds_its_own_claim() -> None:
    redis = redisio.connect(redis_url())
    instance = f"inst-{uuid.uuid4().hex[:8]}"
    channel = Channel("ch", "t", token_digest("t"), "evolution", "plain", "active", provider_instance=instance)
    first, second = _command("c-first"), _command("c-second")  # the same content to the same recipient
    store = LoopStore(redis, SETTINGS)
    now = time.time()
    try:
        [key] = echo_keys(first, channel)
        await redis.rpush(key, Echo("ECHO-A", now + 0.5).encode(), Echo("ECHO-B", now + 1.0).encode())
        assert await store.await_echo(first, channel, now) == "ECHO-A"
        assert await store.await_echo(second, channel, now) == "ECHO-B"
        assert await store.await_echo(first, channel, now) == "ECHO-A"
        third = _command("c-third")
        started = time.monotonic()
        assert await store.await_echo(third, channel, now) is None
        assert time.monotonic() - started >= 1.0  # it waited the window out
        assert SentRecord.decode(await redis.get(sent_key(instance, "ECHO-B"))).resolved_by == "echo"
    finally:
        await redis.aclose()
