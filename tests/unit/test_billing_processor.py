"""The billing worker as built for production, driven by the in-memory harness: charges, crashes, timer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from apiplus.harness import Harness, Killed
from apiplus.processor import TransactionalProcessor
from services.billing.settings import BillingSettings
from services.billing.worker import build

IN, OUT, STATE = "lifecycle", "invoices", "state"
NOV_15_NOON = datetime(2026, 11, 15, 12, tzinfo=UTC).timestamp()


def _harness() -> Harness:
    h = Harness(start=NOV_15_NOON)
    for topic in (IN, OUT, STATE, IN + ".dlq"):
        h.broker.create_topic(topic, partitions=2)
    return h


def _billing(h: Harness, **settings: Any) -> TransactionalProcessor:
    config = BillingSettings(kafka_bootstrap="unused:9092", redis_url="redis://unused", input_topic=IN,
                             output_topic=OUT, state_topic=STATE, tick_seconds=60, **settings)
    return build(config, CollectorRegistry(), clients=h.kafka, clock=h.clock)


def _send(h: Harness, event: dict[str, Any]) -> None:
    h.broker.produce(IN, orjson.dumps(event), key=event["tenant_id"].encode())


def _tenant(tenant: str, due_day: int = 15) -> dict[str, Any]:
    return {"event_id": f"{tenant}-t", "type": "tenant.updated", "occurred_at": "2026-11-01T09:00:00Z",
            "tenant_id": tenant, "plan": "premium", "invoice_due_day": due_day}


def _activation(tenant: str, channel: str, event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "channel.activated", "occurred_at": "2026-11-05T10:00:00Z",
            "tenant_id": tenant, "channel_id": channel}


def _out(h: Harness, kind: str) -> list[dict[str, Any]]:
    return [e for e in (orjson.loads(r.value) for r in h.broker.records(OUT)) if e["type"] == kind]


async def _run_once(p: TransactionalProcessor) -> None:
    await p.start()
    await p.step()
    await p.close()


async def test_one_charge_per_paid_activation_across_redelivery_and_restart() -> None:
    h = _harness()
    for event in (_tenant("acme"), _activation("acme", "free", "a0"), _activation("acme", "c1", "a1"),
                  _activation("acme", "c1", "a1")):
        _send(h, event)
    await _run_once(_billing(h, due_day_timer=False))
    _send(h, _activation("acme", "c1", "a1"))  # redelivered after a restart
    await _run_once(_billing(h, due_day_timer=False))
    assert [c["channel_id"] for c in _out(h, "channel.charged")] == ["c1"]


async def test_a_crash_mid_transaction_neither_loses_nor_doubles_a_charge() -> None:
    h = _harness()
    _send(h, _tenant("acme"))
    _send(h, _activation("acme", "free", "a0"))
    first = _billing(h, due_day_timer=False)
    await first.start()
    await first.step()
    _send(h, _activation("acme", "c1", "a1"))
    h.broker.fail_next("commit", Killed())  # kill -9 inside the commit: the transaction stays open
    with pytest.raises(Killed):
        await first.step()
    h.broker.expel(h.kafka.consumers[0])
    assert [r for r in h.broker.records(OUT, committed=False) if b"channel.charged" in r.value]
    assert _out(h, "channel.charged") == []  # written, not committed: invisible to read_committed
    await _run_once(_billing(h, due_day_timer=False))
    assert [c["channel_id"] for c in _out(h, "channel.charged")] == ["c1"]


async def test_the_due_day_timer_closes_the_period_once_the_grace_has_passed() -> None:
    h = _harness()
    _send(h, _tenant("acme", due_day=15))
    _send(h, _activation("acme", "free", "a0"))
    _send(h, _activation("acme", "c1", "a1"))
    p = _billing(h, due_day_grace_seconds=24 * 3600)
    await p.start()
    await p.step()
    assert _out(h, "invoice.closed") == []  # due day 15 plus 24 h is tomorrow, 00:00
    await h.clock.advance(12 * 3600)
    await p.step()
    [closed] = _out(h, "invoice.closed")
    assert closed["trigger"] == "due_day_timer"
    await h.clock.advance(3600)
    await p.step()
    assert len(_out(h, "invoice.closed")) == 1
