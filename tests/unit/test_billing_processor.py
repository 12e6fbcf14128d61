"""The billing worker as built for production, driven by the in-memory harness: charges, crashes, timer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
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


def _billing(h: Harness, registry: CollectorRegistry | None = None, **settings: Any) -> TransactionalProcessor:
    config = BillingSettings(kafka_bootstrap="unused:9092", redis_url="redis://unused", input_topic=IN,
                             output_topic=OUT, state_topic=STATE, tick_seconds=60, **settings)
    return build(config, registry or CollectorRegistry(), clients=h.kafka, clock=h.clock)


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


async def _acme_with_its_free_channel(h: Harness) -> TransactionalProcessor:
    """A started billing worker that has committed acme (premium) and its free channel."""
    _send(h, _tenant("acme"))
    _send(h, _activation("acme", "free", "a0"))
    p = _billing(h, due_day_timer=False)
    await p.start()
    await p.step()
    return p


async def test_one_charge_per_paid_activation_across_redelivery_and_restart() -> None:
    h = _harness()
    for event in (_tenant("acme"), _activation("acme", "free", "a0"), _activation("acme", "c1", "a1"),
                  _activation("acme", "c1", "a1")):
        _send(h, event)
    await _run_once(_billing(h, due_day_timer=False))
    _send(h, _activation("acme", "c1", "a1"))  # redelivered after a restart
    await _run_once(_billing(h, due_day_timer=False))
    assert [c["channel_id"] for c in _out(h, "channel.charged")] == ["c1"]


async def test_the_event_counters_count_inputs_outputs_cents_and_duplicates() -> None:
    h = _harness()
    for event in (_tenant("acme"), _activation("acme", "free", "a0"), _activation("acme", "c1", "a1"),
                  _activation("acme", "c1", "a1")):
        _send(h, event)
    registry = CollectorRegistry()
    await _run_once(_billing(h, registry, due_day_timer=False))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"apiplus_billing_{name}_total", labels)

    assert value("input_events", type="tenant.updated") == 1
    assert value("input_events", type="channel.activated") == 3
    assert value("events", type="channel.charged") == 1
    assert value("events", type="activation.rejected") is None  # a type never written has no series
    assert (value("charged_cents"), value("invoiced_cents"), value("duplicates")) == (500, 0, 1)


async def test_a_crash_mid_transaction_neither_loses_nor_doubles_a_charge() -> None:
    h = _harness()
    first = await _acme_with_its_free_channel(h)
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


def _changelog(h: Harness, *, committed: bool = True) -> list[tuple[bytes, dict[str, Any]]]:
    return [(r.key, orjson.loads(r.value)) for r in h.broker.records(STATE, committed=committed)]


async def test_several_events_of_one_tenant_in_a_batch_write_one_changelog_record_with_the_final_state() -> None:
    h = _harness()
    for event in (_tenant("acme"), _activation("acme", "free", "a0"), _activation("acme", "c1", "a1"),
                  _activation("acme", "c2", "a2")):
        _send(h, event)
    p = _billing(h, due_day_timer=False)
    await p.start()
    await p.step()
    [(key, row)] = _changelog(h, committed=False)  # one record for four events, nothing else written
    assert key == b"acme"
    assert sorted(row["active"]) == ["c1", "c2", "free"]
    assert row["seen"] == ["acme-t", "a0", "a1", "a2"]
    assert row["plan"] == "premium"
    _send(h, _activation("acme", "c3", "a3"))
    await p.step()
    assert [sorted(r["active"]) for _, r in _changelog(h)] == [["c1", "c2", "free"], ["c1", "c2", "c3", "free"]]
    await p.close()


async def test_an_aborted_batch_leaves_the_tenant_as_last_committed_and_its_retry_charges_once() -> None:
    h = _harness()
    p = await _acme_with_its_free_channel(h)
    _send(h, _activation("acme", "c1", "a1"))
    _send(h, _activation("acme", "c2", "a2"))
    h.broker.fail_next("commit", KafkaConnectionError("broker went away"))
    await h.clock.run(p.step())
    aborted = [e for e in (orjson.loads(r.value) for r in h.broker.records(OUT, committed=False))
               if e["type"] == "channel.charged"]
    assert [c["channel_id"] for c in aborted] == ["c1", "c2", "c1", "c2"]  # the aborted attempt, then its retry
    # Had the abort left c1 and c2 active in memory, the retry would have charged neither.
    assert [c["channel_id"] for c in _out(h, "channel.charged")] == ["c1", "c2"]
    assert sorted(_changelog(h)[-1][1]["active"]) == ["c1", "c2", "free"]
    await p.close()
    restarted = _billing(h, due_day_timer=False)  # what the changelog restores is what memory held
    _send(h, _activation("acme", "c2", "a2"))
    await _run_once(restarted)
    assert [c["channel_id"] for c in _out(h, "channel.charged")] == ["c1", "c2"]


async def test_an_aborted_timer_closing_is_closed_again_once_at_the_next_tick() -> None:
    h = _harness()
    _send(h, _tenant("acme", due_day=15))
    _send(h, _activation("acme", "free", "a0"))
    p = _billing(h, due_day_grace_seconds=0)
    await p.start()
    await p.step()
    # The first step's tick closed November; closing December's period is aborted, then done at the next tick.
    assert [c["period"] for c in _out(h, "invoice.closed")] == ["2026-11"]
    await h.clock.advance(30 * 24 * 3600 - 60)
    h.broker.fail_next("commit", KafkaConnectionError("broker went away"))
    await p.step()
    assert [c["period"] for c in _out(h, "invoice.closed")] == ["2026-11"]
    await h.clock.advance(60)
    await p.step()
    assert [c["period"] for c in _out(h, "invoice.closed")] == ["2026-11", "2026-12"]
    written = [e for e in (orjson.loads(r.value) for r in h.broker.records(OUT, committed=False))
               if e["type"] == "invoice.closed"]
    assert [c["period"] for c in written] == ["2026-11", "2026-12", "2026-12"]  # the aborted one, then again
    assert sorted(_changelog(h)[-1][1]["closed"]) == ["2026-11", "2026-12"]
    await p.close()
