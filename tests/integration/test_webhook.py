"""The webhook ingress against the real broker: what is accepted lands unchanged, what is refused produces nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from apiplus.health import HealthServer
from services.ingest.core import Context
from services.ingest.metrics import WebhookMetrics
from services.ingest.settings import WebhookSettings
from services.ingest.webhook import Ingress, RawProducer
from services.ingest.worker import dialect_header, normalize_record
from tests.integration.kafkatools import ROOT, bootstrap, create_topics, scan, unique, wait_for

APP_SECRET = "meta-app-secret-" + "7" * 16
VERIFY_TOKEN = "meta-verify-token-" + "3" * 8
INGRESS_KEY = "ingress-key-" + "5" * 24
LIMIT = 4096


def sign(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def cloudapi_body(*changes: tuple[str, str]) -> dict[str, Any]:
    """A Cloud API messages webhook; each change is (phone_number_id, message id)."""
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": channel},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5511988887777"}],
            "messages": [{"from": "5511988887777", "id": msg_id, "timestamp": "1764234000", "type": "text",
                          "text": {"body": "oi"}}]}}
        for channel, msg_id in changes]}]}


@dataclass
class Running:
    url: str
    topic: str
    registry: CollectorRegistry
    session: aiohttp.ClientSession
    producer: RawProducer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def read_raw(r: Running) -> list[Any]:
    """Every record (key, value, headers) the ingress stored: once none it handed to its producers is
    still unacknowledged, all of them are in the topic, so it is read to its end with no quiet window."""
    await wait_for(lambda: r.producer.pending == 0, timeout=20, interval=0.05)
    return await scan(r.topic)


@pytest.fixture
async def ingress() -> AsyncIterator[Running]:
    topic = unique("apiplus.ingest.raw")
    await create_topics([topic], partitions=3)
    settings = WebhookSettings(
        kafka_bootstrap=bootstrap(), raw_topic=topic, cloudapi_app_secret=APP_SECRET,
        cloudapi_verify_token=VERIFY_TOKEN, webhook_key=INGRESS_KEY, webhook_max_body_bytes=LIMIT,
        webhook_ack_timeout_seconds=10,
    )
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    producer = RawProducer(settings, metrics)
    task = asyncio.create_task(producer.run())

    async def ready() -> dict[str, bool]:
        return {"kafka": producer.connected}

    port = _free_port()
    server = HealthServer("127.0.0.1", port, registry, ready, Ingress(settings, metrics, producer).app())
    await server.start()
    async with aiohttp.ClientSession() as session:
        running = Running(f"http://127.0.0.1:{port}", topic, registry, session, producer)
        await wait_for(lambda: producer.connected, timeout=30)
        try:
            yield running
        finally:
            producer.stop()
            await task
            await server.stop()


async def post(r: Running, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with r.session.post(r.url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_meta_verification_handshake(ingress: Running) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    async with ingress.session.get(ingress.url + "/webhooks/cloudapi", params=query) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "1158201444"
    for wrong in ({**query, "hub.verify_token": "guess"}, {**query, "hub.mode": "unsubscribe"},
                  {k: v for k, v in query.items() if k != "hub.verify_token"}):
        async with ingress.session.get(ingress.url + "/webhooks/cloudapi", params=wrong) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "forbidden"


async def test_accepted_bodies_land_byte_identical_with_key_and_dialect(ingress: Running) -> None:
    # Odd spacing and key order: what lands must be these bytes, not a re-encoding.
    cloud = orjson.dumps(cloudapi_body(("PNID-1", "wamid.A"))).replace(b'"entry":', b'"entry" :  ')
    evolution = b'{"event":"messages.upsert",  "instance":"evo-1","apikey":"evo-secret","data":{}}'
    uazapi = b'{"EventType":"messages","instanceName":"uaz-1","token":"uaz-secret","message":{}}'
    assert await post(ingress, "/webhooks/cloudapi", cloud, sign(cloud)) == (200, b'{"stored":1}')
    status, _ = await post(ingress, "/webhooks/evolution", evolution, {"Authorization": f"Bearer {INGRESS_KEY}"})
    assert status == 200
    status, _ = await post(ingress, f"/webhooks/uazapi/{INGRESS_KEY}", uazapi)
    assert status == 200
    stored = await read_raw(ingress)
    assert len(stored) == 3
    records = {r.key: r for r in stored}
    assert set(records) == {b"PNID-1", b"evo-1", b"uaz-1"}
    assert records[b"PNID-1"].value == cloud
    assert records[b"evo-1"].value == evolution
    assert records[b"uaz-1"].value == uazapi
    assert {k: dialect_header(r.headers) for k, r in records.items()} == {
        b"PNID-1": "cloudapi", b"evo-1": "evolution", b"uaz-1": "uazapi"}


async def test_refused_requests_produce_nothing(ingress: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = orjson.dumps(cloudapi_body(("PNID-9", "wamid.forged")))
    other = orjson.dumps(cloudapi_body(("PNID-9", "wamid.other")))
    keyed = b'{"event":"messages.upsert","instance":"evo-9","data":{}}'
    refused = [
        ("/webhooks/cloudapi", body, {}, 401),  # no signature
        ("/webhooks/cloudapi", body, sign(body, "not-the-app-secret"), 401),
        ("/webhooks/cloudapi", body, sign(other), 401),  # a real signature replayed on an altered body
        ("/webhooks/cloudapi", body, {"X-Hub-Signature-256": "sha1=abc"}, 401),
        ("/webhooks/evolution", keyed, {}, 401),
        ("/webhooks/evolution", keyed, {"Authorization": "Bearer wrong-key-wrong-key-wrong"}, 401),
        ("/webhooks/uazapi/wrong-key-in-the-path-0000", keyed, {}, 401),
        ("/webhooks/uazapi", b"{" + b" " * LIMIT + b"}", {"Authorization": f"Bearer {INGRESS_KEY}"}, 413),
        ("/webhooks/cloudapi", b"not json", sign(b"not json"), 400),
        ("/webhooks/cloudapi", b"[1, 2]", sign(b"[1, 2]"), 400),
        ("/webhooks/whatsapp", body, {}, 404),
    ]
    for path, payload, headers, expected in refused:
        status, answer = await post(ingress, path, payload, headers)
        assert status == expected, (path, headers, answer)
        if status != 413:
            error = orjson.loads(answer)["error"]
            assert error["code"]
            assert error["message"]
    async with ingress.session.put(ingress.url + "/webhooks/evolution") as resp:
        assert resp.status == 405
    sentinel = orjson.dumps(cloudapi_body(("PNID-ok", "wamid.ok")))
    assert (await post(ingress, "/webhooks/cloudapi", sentinel, sign(sentinel)))[0] == 200
    records = await read_raw(ingress)
    assert [r.value for r in records] == [sentinel]
    text = generate_latest(ingress.registry).decode()
    assert 'apiplus_ingest_webhook_signature_failures_total{reason="mismatch",route="cloudapi"} 3.0' in text
    assert 'apiplus_ingest_webhook_requests_total{code="413",route="uazapi"} 1.0' in text
    # The key given in a path reaches neither a metric nor a log line.
    for secret in ("wrong-key-in-the-path-0000", INGRESS_KEY, APP_SECRET):
        assert secret not in text
        assert secret not in caplog.text


async def test_a_body_naming_several_channels_is_split_per_channel(ingress: Running) -> None:
    body = cloudapi_body(("PNID-A", "wamid.1"), ("PNID-B", "wamid.2"), ("PNID-A", "wamid.3"))
    body["entry"].append({"id": "WABA2", "changes": cloudapi_body(("PNID-B", "wamid.4"))["entry"][0]["changes"]})
    raw = orjson.dumps(body)
    assert await post(ingress, "/webhooks/cloudapi", raw, sign(raw)) == (200, b'{"stored":2}')
    stored = await read_raw(ingress)
    assert len(stored) == 2
    records = {r.key: r.value for r in stored}
    assert set(records) == {b"PNID-A", b"PNID-B"}
    for key, ids in ((b"PNID-A", ["wamid.1", "wamid.3"]), (b"PNID-B", ["wamid.2", "wamid.4"])):
        split = orjson.loads(records[key])
        assert split["object"] == "whatsapp_business_account"
        # Still a Cloud API body: ingest normalises it into this channel's messages only.
        events = normalize_record(records[key], Context(dialect="cloudapi"), 1 << 20).events
        assert [e["message"]["id"] for e in events] == ids
        assert {e["channel_id"] for e in events} == {key.decode()}
    assert [e["id"] for e in orjson.loads(records[b"PNID-B"])["entry"]] == ["WABA1", "WABA2"]


def _spawn_webhook(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.cli", "ingest", "webhook"], env=env, cwd=ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def test_kafka_down_answers_503_with_retry_after(tmp_path: Path) -> None:
    """The real command, pointed at a port where no broker listens."""
    port, dead = _free_port(), _free_port()
    env = {**os.environ, "APIPLUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}", "APIPLUS_INGEST_WEBHOOK_PORT": str(port),
           "APIPLUS_INGEST_CLOUDAPI_APP_SECRET": APP_SECRET, "APIPLUS_INGEST_WEBHOOK_KEY": INGRESS_KEY,
           "APIPLUS_INGEST_WEBHOOK_ACK_TIMEOUT_SECONDS": "2", "APIPLUS_INGEST_WEBHOOK_RETRY_AFTER_SECONDS": "7"}
    env.pop("APIPLUS_REDIS_URL", None)  # the ingress needs no Redis
    log = tmp_path / "webhook.log"
    proc = _spawn_webhook(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def alive() -> bool:
                try:
                    async with session.get(url + "/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(alive, timeout=30)
            async with session.get(url + "/readyz") as resp:
                assert resp.status == 503
            body = orjson.dumps(cloudapi_body(("PNID-1", "wamid.down")))
            started = time.monotonic()
            async with session.post(url + "/webhooks/cloudapi", data=body, headers=sign(body)) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "7"
                assert (await resp.json())["error"]["code"] == "unavailable"
            async with session.post(f"{url}/webhooks/uazapi/{INGRESS_KEY}", data=b'{"instanceName":"u"}') as resp:
                assert resp.status == 503
            assert time.monotonic() - started < 10
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    text = log.read_text()
    assert "kafka unreachable" in text
    assert INGRESS_KEY not in text
    assert APP_SECRET not in text
