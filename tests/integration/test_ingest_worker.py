"""ingest through the real broker and Redis: raw in, canonical and health out, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from pathlib import Path
from typing import Any

import orjson

from services.ingest.settings import IngestSettings
from services.ingest.worker import HEALTH_KEY
from tests.integration.ingesttools import ingest_topics, running_ingest
from tests.integration.kafkatools import (
    bootstrap,
    caught_up,
    produce,
    read_to_end,
    redis_url,
    start_worker,
    unique,
    wait_for,
)

SECRET = "evo-apikey-" + "9" * 16


def _env(topics: dict[str, str]) -> dict[str, str]:
    return {
        "APIPLUS_KAFKA_BOOTSTRAP": bootstrap(),
        "APIPLUS_REDIS_URL": redis_url(),
        "APIPLUS_INGEST_HTTP_PORT": "0",
        "APIPLUS_INGEST_GROUP_ID": unique("ingest"),
        "APIPLUS_INGEST_HEALTH_GROUP_ID": unique("ingest-health"),
        "APIPLUS_INGEST_SUBSCRIBE_EVOLUTION": "false",
        "APIPLUS_INGEST_TICK_SECONDS": "1",
        **{f"APIPLUS_INGEST_{k.upper()}": v for k, v in topics.items()},
    }


def _upsert(instance: str, msg_id: str, text: str = "oi") -> dict[str, Any]:
    return {"event": "messages.upsert", "instance": instance, "apikey": SECRET, "date_time": "2026-11-27T09:00:00Z",
            "data": {"key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False, "id": msg_id},
                     "message": {"conversation": text}, "messageTimestamp": 1764234000}}


def _conn(instance: str, state: str, code: int | None, at: str) -> dict[str, Any]:
    return {"event": "connection.update", "instance": instance, "apikey": SECRET, "date_time": at,
            "data": {"instance": instance, "state": state, "statusReason": code}}


async def test_raw_to_canonical_and_health_with_duplicates_and_bad_input(tmp_path: Path) -> None:
    topics = await ingest_topics()
    env = _env(topics)
    fields = {k.removeprefix("APIPLUS_INGEST_").lower(): v for k, v in env.items() if k.startswith("APIPLUS_INGEST_")}
    settings = IngestSettings(kafka_bootstrap=bootstrap(), redis_url=redis_url(), **fields)
    run = unique("r")
    async with running_ingest(settings) as redis:
        raw = [
            (b"evo-a", _conn(f"{run}-a", "connecting", None, "2026-11-27T09:00:00Z")),
            (b"evo-a", _conn(f"{run}-a", "open", None, "2026-11-27T09:00:05Z")),
            (b"evo-a", _upsert(f"{run}-a", "M1")),
            (b"evo-a", _upsert(f"{run}-a", "M1")),  # the gateway delivers M1 twice
            (b"evo-a", _upsert(f"{run}-a", "M2", "oi")),  # a different message with the same text
            (b"evo-a", _conn(f"{run}-a", "close", 401, "2026-11-27T09:10:00Z")),
            (b"evo-a", b"{truncated"),
            (b"evo-a", {"event": "messages.upsert", "apikey": SECRET, "data": {}}),
        ]
        await produce(topics["raw_topic"], raw)
        # Both stages committed past every input: whatever they make of it is out.
        await caught_up(settings.group_id, topics["raw_topic"])
        await caught_up(settings.health_group_id, topics["events_topic"])
        events = await read_to_end(topics["events_topic"], settled=True)
        changes = await read_to_end(topics["health_topic"], settled=True)
        dlq = await read_to_end(topics["raw_topic"] + ".dlq", settled=True)
        await wait_for(lambda: redis.get(HEALTH_KEY + f"{run}-a"))
        copy = orjson.loads(await redis.get(HEALTH_KEY + f"{run}-a"))
    kinds = collections.Counter(e["type"] for e in events)
    assert kinds == {"message.received": 2, "connection.update": 3}
    assert sorted(e["message"]["id"] for e in events if e["type"] == "message.received") == ["M1", "M2"]
    assert [c["state"] for c in changes] == ["connecting", "open", "logged_out"]
    assert changes[-1]["conditions"] == ["logged_out"]
    assert copy["state"] == "logged_out"
    assert sorted(d["error"]["code"] for d in dlq) == ["invalid_json", "missing_field"]
    everything = orjson.dumps([events, changes, dlq]).decode()
    assert SECRET not in everything


async def test_kill9_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    topics = await ingest_topics()
    run = unique("k")
    raw = [(f"i{i % 40}".encode(), _upsert(f"{run}-{i % 40}", f"M{i}")) for i in range(3000)]
    log = tmp_path / "ingest.log"
    env = _env(topics)  # one group id for both runs: the restart must resume the same group
    worker = start_worker("ingest", env, log)
    try:
        await produce(topics["raw_topic"], raw[:1500])
        producing = asyncio.create_task(produce(topics["raw_topic"], raw[1500:]))
        await asyncio.sleep(2.0)
        assert worker.poll() is None, log.read_text()[-3000:]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        await producing
        worker = start_worker("ingest", env, log)
        await caught_up(env["APIPLUS_INGEST_GROUP_ID"], topics["raw_topic"], timeout=120)
        # The health stage too, so the restarted worker is past its start-up when it is asked to stop.
        await caught_up(env["APIPLUS_INGEST_HEALTH_GROUP_ID"], topics["events_topic"], timeout=120)
        events = await read_to_end(topics["events_topic"], settled=True)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    ids = collections.Counter(e["message"]["id"] for e in events)
    assert len(ids) == 3000, f"{3000 - len(ids)} canonical events lost"
    assert set(ids.values()) == {1}, "a canonical event was duplicated"
    assert worker.returncode == 0, log.read_text()[-3000:]
