"""billing through the real broker: exactly one charge per paid activation, whatever is redelivered or killed."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from services.billing.settings import BillingSettings
from services.billing.worker import build
from tests.integration.kafkatools import (
    bootstrap,
    caught_up,
    create_topics,
    produce,
    read_to_end,
    start_worker,
    unique,
)


def _topics() -> dict[str, str]:
    base = unique("apiplus.billing")
    return {"input_topic": f"{base}.in", "output_topic": f"{base}.out", "state_topic": f"{base}.state"}


def _settings(topics: dict[str, str], **extra: Any) -> BillingSettings:
    return BillingSettings(
        kafka_bootstrap=bootstrap(),
        redis_url="redis://unused",
        group_id=unique("billing-group"),
        tick_seconds=0.5,
        **topics,
        **extra,
    )


async def _create(topics: dict[str, str]) -> None:
    await create_topics(
        [topics["input_topic"], topics["output_topic"], topics["state_topic"], topics["input_topic"] + ".dlq"],
        partitions=3,
        compacted=[topics["state_topic"]],
    )


def _tenant(tenant: str, plan: str = "premium", due_day: int = 30, at: str = "2026-11-01T09:00:00Z") -> dict[str, Any]:
    return {"event_id": f"{tenant}-t", "type": "tenant.updated", "occurred_at": at, "tenant_id": tenant,
            "plan": plan, "invoice_due_day": due_day}


def _activation(tenant: str, channel: str, event_id: str, at: str = "2026-11-05T10:00:00Z") -> dict[str, Any]:
    return {"event_id": event_id, "type": "channel.activated", "occurred_at": at, "tenant_id": tenant,
            "channel_id": channel}


async def test_charges_once_when_activation_redelivered() -> None:
    topics = _topics()
    await _create(topics)
    settings = _settings(topics, due_day_timer=False)
    processor = build(settings, CollectorRegistry())
    task = asyncio.create_task(processor.run())
    try:
        events = [_tenant("acme"), _activation("acme", "trial", "a0"), _activation("acme", "c1", "a1")]
        events += [_activation("acme", "c1", "a1")]  # the same event delivered again
        events += [{"event_id": "close-1", "type": "invoice.closing", "occurred_at": "2026-11-30T00:00:00Z",
                    "tenant_id": "acme", "invoice_id": "inv-2026-11"}]
        events += [{"event_id": "close-2", "type": "invoice.closing", "occurred_at": "2026-11-30T00:05:00Z",
                    "tenant_id": "acme", "invoice_id": "inv-2026-11"}]
        await produce(topics["input_topic"], [(b"acme", e) for e in events])
        await produce(topics["input_topic"], [(b"acme", b"{not json"), (b"acme", {"type": "channel.activated"})])
        # Committed past every input: each charge, invoice and dead letter of theirs is out.
        await caught_up(settings.group_id, topics["input_topic"])
        out = await read_to_end(topics["output_topic"], settled=True)
        dlq = await read_to_end(topics["input_topic"] + ".dlq", settled=True)
    finally:
        processor.stop()
        await asyncio.wait_for(task, 30)
    types = collections.Counter(e["type"] for e in out)
    assert types == {"channel.charged": 1, "invoice.closed": 1}
    charge = next(e for e in out if e["type"] == "channel.charged")
    assert (charge["channel_id"], charge["amount_cents"], charge["currency"]) == ("c1", 500, "BRL")
    invoice = next(e for e in out if e["type"] == "invoice.closed")
    assert invoice["total_cents"] == 500
    assert [line["amount_cents"] for line in invoice["lines"]] == [0, 500]
    assert sorted(d["error"]["code"] for d in dlq) == ["invalid_json", "missing_field"]
    assert all(d["source"]["topic"] == topics["input_topic"] for d in dlq)


async def test_kill9_during_burst_leaves_one_charge_per_activation(tmp_path: Path) -> None:
    topics = _topics()
    await _create(topics)
    tenants = [f"tenant-{i}" for i in range(12)]
    channels_per_tenant = 40
    events: list[tuple[bytes, dict[str, Any]]] = [(t.encode(), _tenant(t)) for t in tenants]
    for n in range(channels_per_tenant):
        for t in tenants:
            events.append((t.encode(), _activation(t, f"{t}-ch{n}", f"{t}-act-{n}")))
    paid = len(tenants) * (channels_per_tenant - 1)  # the first channel of each tenant is the free one
    env = {
        "APIPLUS_KAFKA_BOOTSTRAP": bootstrap(),
        "APIPLUS_REDIS_URL": "redis://unused",
        "APIPLUS_BILLING_HTTP_PORT": "0",
        "APIPLUS_BILLING_GROUP_ID": unique("billing-kill"),
        "APIPLUS_BILLING_DUE_DAY_TIMER": "false",
        **{f"APIPLUS_BILLING_{k.upper()}": v for k, v in topics.items()},
    }
    log = tmp_path / "billing.log"
    worker = start_worker("billing", env, log)
    try:
        await produce(topics["input_topic"], events[: len(events) // 2])
        await asyncio.sleep(1.0)
        producer_task = asyncio.create_task(produce(topics["input_topic"], events[len(events) // 2 :]))
        await asyncio.sleep(0.3)
        assert worker.poll() is None, log.read_text()[-3000:]
        os.kill(worker.pid, signal.SIGKILL)  # in the middle of the burst
        worker.wait()
        await producer_task
        # Redeliver a slice of the burst as upstream retries would.
        await produce(topics["input_topic"], events[100:160])
        worker = start_worker("billing", env, log)
        started = time.monotonic()
        await caught_up(env["APIPLUS_BILLING_GROUP_ID"], topics["input_topic"], timeout=90)
        out = await read_to_end(topics["output_topic"], settled=True)
        recovered = time.monotonic() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    charges = collections.Counter(e["channel_id"] for e in out if e["type"] == "channel.charged")
    assert len(charges) == paid, f"{len(charges)} channels charged, {paid} expected (recovered in {recovered:.1f}s)"
    assert set(charges.values()) == {1}
    assert worker.returncode == 0, log.read_text()[-3000:]
