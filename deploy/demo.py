"""Publish a little of everything to a running `make run` stack and show what came out.

Registers a demo PLUS channel (token printed below), sends it three interactive commands, feeds ingest
one event of each gateway and billing a tenant with two channels and a closing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))

import infra  # noqa: E402

TOKEN = "demo-token-change-me"


async def main() -> None:
    state = infra.Infra.from_env(os.environ.get("APIPLUS_PROFILE", "run"))
    producer = AIOKafkaProducer(bootstrap_servers=state.bootstrap, enable_idempotence=True)
    await producer.start()
    run = uuid.uuid4().hex[:6]
    now = int(time.time())
    try:
        channel = {"channel_id": "demo-channel", "tenant_id": "demo-tenant",
                   "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "provider": "uazapi",
                   "mode": "plus", "status": "active", "pacing": {"min_gap_ms": 500, "jitter_ms": 500}}
        await producer.send_and_wait("apiplus.registry.channels.v1", orjson.dumps(channel), key=b"demo-channel")
        commands = [
            {"kind": "buttons", "body": "Confirma o pedido?", "buttons": [{"id": "yes", "title": "Sim"},
                                                                          {"id": "no", "title": "Não"}]},
            {"kind": "copy_code", "body": "Pague com Pix", "code": "00020126580014BR.GOV.BCB.PIX6304ABCD"},
            {"kind": "list", "body": "Escolha", "button": "Ver", "sections": [
                {"rows": [{"id": "a", "title": "Opção A"}, {"id": "b", "title": "Opção B"}]}]},
        ]
        for i, message in enumerate(commands):
            cmd = {"command_id": f"demo-{run}-{i}", "channel_id": "demo-channel", "token": TOKEN,
                   "to": "5511999990000", "message": message}
            await producer.send("apiplus.dispatch.commands.v1", orjson.dumps(cmd), key=b"demo-channel")
        raw = [
            {"event": "connection.update", "instance": "demo-channel", "apikey": "evolution-secret",
             "date_time": "2026-11-27T12:00:00.000Z", "data": {"state": "open", "statusReason": 200}},
            {"EventType": "messages", "instanceName": "demo-channel", "token": "uazapi-secret",
             "message": {"messageid": f"m-{run}", "chatid": "5511988887777@s.whatsapp.net", "fromMe": False,
                         "messageType": "Conversation", "text": "oi", "messageTimestamp": now * 1000}},
        ]
        for event in raw:
            await producer.send("apiplus.ingest.raw.v1", orjson.dumps(event), key=b"demo-channel")
        tenant = f"demo-tenant-{run}"
        lifecycle = [
            {"type": "tenant.updated", "plan": "premium", "invoice_due_day": 30},
            {"type": "channel.activated", "channel_id": "c1"},
            {"type": "channel.activated", "channel_id": "c2"},
            {"type": "invoice.closing", "invoice_id": f"inv-{run}"},
        ]
        for i, event in enumerate(lifecycle):
            full = {"event_id": f"{tenant}-{i}", "occurred_at": "2026-11-27T12:00:00Z", "tenant_id": tenant, **event}
            await producer.send("apiplus.billing.lifecycle.v1", orjson.dumps(full), key=tenant.encode())
        await producer.flush()
    finally:
        await producer.stop()
    print(f"demo: published; channel token is {TOKEN!r}. Waiting for outputs...")
    await asyncio.sleep(4)
    for topic in ("apiplus.dispatch.results.v1", "apiplus.ingest.events.v1", "apiplus.billing.invoices.v1"):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=state.bootstrap, auto_offset_reset="earliest",
                                    isolation_level="read_committed", group_id=None)
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=2000)
            records = [r for rs in batch.values() for r in rs]
            print(f"\n== {topic}: {len(records)} records (latest 4)")
            for r in records[-4:]:
                print("  ", r.value.decode()[:300])
        finally:
            await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
