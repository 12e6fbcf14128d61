"""Fault scenarios on the real stack. Each publishes inputs, injects a fault, and counts what came out."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from apiplus.topics import (
    BILLING_INVOICES,
    BILLING_LIFECYCLE,
    DISPATCH_COMMANDS,
    DISPATCH_RESULTS,
    DLQ_SOURCES,
    INGEST_EVENTS,
    INGEST_RAW,
    REGISTRY_CHANNELS,
    TOPICS,
)
from chaos import fuzz
from chaos.stack import PROVIDER_SECRETS, Stack, all_topics, publish, read_topic
from services.dispatch.core import token_digest


@dataclass
class Outcome:
    scenario: str
    published: int
    expected: int
    lost: int
    duplicated: int
    recover_seconds: float | None = None
    bad_inputs: int = 0
    dead_lettered: int = 0
    leaks: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scenarios:
    def __init__(self, stack: Stack, restart_broker: Callable[[], Awaitable[None]] | None = None,
                 restart_redis: Callable[[], Awaitable[None]] | None = None) -> None:
        self.stack = stack
        self.bootstrap = stack.bootstrap
        self.run = uuid.uuid4().hex[:6]
        self.token = f"chaos-channel-token-{uuid.uuid4().hex}"
        self.restart_broker = restart_broker
        self.restart_redis = restart_redis
        self.secrets = {self.token, fuzz.SECRET_APIKEY, fuzz.SECRET_UAZ_TOKEN, *PROVIDER_SECRETS.values()}
        self.channels = [f"chaos-{self.run}-ch{i}" for i in range(20)]

    async def setup(self) -> None:
        rows = [(c.encode(), orjson.dumps({"channel_id": c, "tenant_id": f"tenant-{c}",
                                           "token_sha256": token_digest(self.token), "provider": "simulator",
                                           "mode": "plus", "status": "active"})) for c in self.channels]
        other = {"channel_id": f"chaos-{self.run}-other", "tenant_id": "someone-else",
                 "token_sha256": token_digest("another-tenants-token"), "provider": "simulator", "mode": "plus",
                 "status": "active"}
        rows.append((other["channel_id"].encode(), orjson.dumps(other)))
        await publish(self.bootstrap, REGISTRY_CHANNELS.name, rows)

    # --- inputs -----------------------------------------------------------------------------------
    def raw_events(self, tag: str, n: int) -> list[tuple[bytes, bytes]]:
        out = []
        for i in range(n):
            ch = random.choice(self.channels)
            event = {"event": "messages.upsert", "instance": ch, "apikey": fuzz.SECRET_APIKEY,
                     "date_time": "2026-11-27T09:00:00Z",
                     "data": {"key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False,
                                      "id": f"{tag}-{i}"},
                              "message": {"conversation": f"m{i}"}, "messageTimestamp": 1764234000 + i}}
            out.append((ch.encode(), orjson.dumps(event)))
        return out

    def lifecycle(self, tag: str, tenants: int, channels: int) -> tuple[list[tuple[bytes, bytes]], int]:
        out = []
        for t in range(tenants):
            tenant = f"chaos-{self.run}-{tag}-t{t}"
            out.append((tenant.encode(), orjson.dumps({"event_id": f"{tenant}-u", "type": "tenant.updated",
                                                        "occurred_at": "2026-11-01T00:00:00Z", "tenant_id": tenant,
                                                        "plan": "premium", "invoice_due_day": 30})))
        for c in range(channels):
            for t in range(tenants):
                tenant = f"chaos-{self.run}-{tag}-t{t}"
                out.append((tenant.encode(), orjson.dumps({
                    "event_id": f"{tenant}-a{c}", "type": "channel.activated", "occurred_at": "2026-11-02T00:00:00Z",
                    "tenant_id": tenant, "channel_id": f"{tenant}-c{c}"})))
        return out, tenants * (channels - 1)

    def commands(self, tag: str, n: int) -> list[tuple[bytes, bytes]]:
        out = []
        for i in range(n):
            ch = self.channels[i % len(self.channels)]
            out.append((ch.encode(), orjson.dumps({
                "command_id": f"{self.run}-{tag}-{i}", "channel_id": ch, "token": self.token, "to": "5511999990000",
                "message": {"kind": "text", "body": f"mensagem {i}"}})))
        return out

    # --- counting ---------------------------------------------------------------------------------
    @staticmethod
    async def _until_complete(
        expected: int, collect: Callable[[], Awaitable[Counter[str]]], timeout: float, interval: float
    ) -> tuple[int, int, float]:
        """Poll `collect` (outputs per id) until `expected` distinct ids: (lost, duplicated, seconds)."""
        started = time.monotonic()
        while True:
            seen = await collect()
            if len(seen) >= expected or time.monotonic() - started > timeout:
                return expected - len(seen), sum(v - 1 for v in seen.values()), time.monotonic() - started
            await asyncio.sleep(interval)

    async def count_ingest(self, tag: str, n: int, timeout: float = 120) -> tuple[int, int, float]:
        async def collect() -> Counter[str]:
            records = await read_topic(self.bootstrap, INGEST_EVENTS.name, idle=0.5)
            return Counter(e["message"]["id"] for e in (orjson.loads(r.value) for r in records)
                           if e.get("type") == "message.received" and e["message"]["id"].startswith(f"{tag}-"))

        return await self._until_complete(n, collect, timeout, 1.0)

    async def count_billing(self, tag: str, expected: int, timeout: float = 120) -> tuple[int, int, float]:
        prefix = f"chaos-{self.run}-{tag}-"

        async def collect() -> Counter[str]:
            records = await read_topic(self.bootstrap, BILLING_INVOICES.name, idle=0.5)
            return Counter(e["channel_id"] for e in (orjson.loads(r.value) for r in records)
                           if e.get("type") == "channel.charged" and e["tenant_id"].startswith(prefix))

        return await self._until_complete(expected, collect, timeout, 1.0)

    async def count_dispatch(self, tag: str, n: int, timeout: float = 120) -> tuple[int, int, float]:
        prefix = f"{self.run}-{tag}-"

        async def collect() -> Counter[str]:
            return Counter({k: v for k, v in self.stack.deliveries().items() if k.startswith(prefix)})

        return await self._until_complete(n, collect, timeout, 0.5)

    # --- fault scenarios --------------------------------------------------------------------------
    async def kill9(self, service: str, times: int) -> Outcome:
        tag = f"k9{service}{uuid.uuid4().hex[:4]}"
        name = f"{service}-a"
        if service == "ingest":
            inputs, expected, topic = self.raw_events(tag, 3000), 3000, INGEST_RAW.name
        elif service == "billing":
            inputs, expected = self.lifecycle(tag, 20, 40)
            topic = BILLING_LIFECYCLE.name
        else:
            inputs, expected, topic = self.commands(tag, 600), 600, DISPATCH_COMMANDS.name
        size = -(-len(inputs) // (times + 1))
        chunks = [inputs[i * size:(i + 1) * size] for i in range(times + 1)]  # contiguous: per-key order kept
        recovered_at = time.monotonic()
        for i in range(times):
            await publish(self.bootstrap, topic, chunks[i])
            await asyncio.sleep(random.uniform(0.2, 1.5))  # a random point in the stream
            self.stack.kill9(name)
            self.stack.start(service)
            recovered_at = time.monotonic()
        await publish(self.bootstrap, topic, chunks[-1])
        counter = {"ingest": self.count_ingest, "billing": self.count_billing, "dispatch": self.count_dispatch}[service]
        lost, dup, _ = await counter(tag, expected)
        return Outcome(f"kill -9 {service} x{times}", len(inputs), expected, lost, dup,
                       recover_seconds=round(time.monotonic() - recovered_at, 1))

    async def broker_restart(self) -> Outcome:
        assert self.restart_broker is not None
        tag = f"broker{uuid.uuid4().hex[:4]}"
        raw = self.raw_events(tag, 1500)
        commands = self.commands(tag, 300)
        lifecycle, charges = self.lifecycle(tag, 10, 20)
        await publish(self.bootstrap, INGEST_RAW.name, raw[:750])
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[:150])
        await publish(self.bootstrap, BILLING_LIFECYCLE.name, lifecycle[: len(lifecycle) // 2])
        await asyncio.sleep(0.5)
        await self.restart_broker()
        restarted = time.monotonic()
        await publish(self.bootstrap, INGEST_RAW.name, raw[750:])
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[150:])
        await publish(self.bootstrap, BILLING_LIFECYCLE.name, lifecycle[len(lifecycle) // 2:])
        results = [await self.count_ingest(tag, 1500, 180), await self.count_dispatch(tag, 300, 180),
                   await self.count_billing(tag, charges, 180)]
        return Outcome("broker stop and restart", len(raw) + len(commands) + len(lifecycle), 1500 + 300 + charges,
                       sum(r[0] for r in results), sum(r[1] for r in results),
                       recover_seconds=round(time.monotonic() - restarted, 1))

    async def redis_restart(self) -> Outcome:
        assert self.restart_redis is not None
        tag = f"redis{uuid.uuid4().hex[:4]}"
        commands = self.commands(tag, 400)
        raw = self.raw_events(tag, 1000)
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[:200])
        await publish(self.bootstrap, INGEST_RAW.name, raw[:500])
        await asyncio.sleep(0.3)
        await self.restart_redis()
        restarted = time.monotonic()
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[200:])
        await publish(self.bootstrap, INGEST_RAW.name, raw[500:])
        d = await self.count_dispatch(tag, 400, 180)
        i = await self.count_ingest(tag, 1000, 180)
        return Outcome("redis stop and restart", 1400, 1400, d[0] + i[0], d[1] + i[1],
                       recover_seconds=round(time.monotonic() - restarted, 1))

    async def rebalance(self) -> Outcome:
        tag = f"rebal{uuid.uuid4().hex[:4]}"
        raw = self.raw_events(tag, 2000)
        commands = self.commands(tag, 400)
        lifecycle, charges = self.lifecycle(tag, 12, 20)
        for service in ("ingest", "dispatch", "billing"):
            self.stack.start(service, "b")
        await publish(self.bootstrap, INGEST_RAW.name, raw[:1000])
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[:200])
        await publish(self.bootstrap, BILLING_LIFECYCLE.name, lifecycle[: len(lifecycle) // 2])
        await asyncio.sleep(4)
        for service in ("ingest", "dispatch", "billing"):
            self.stack.kill9(f"{service}-a")
        killed = time.monotonic()
        await publish(self.bootstrap, INGEST_RAW.name, raw[1000:])
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[200:])
        await publish(self.bootstrap, BILLING_LIFECYCLE.name, lifecycle[len(lifecycle) // 2:])
        results = [await self.count_ingest(tag, 2000, 180), await self.count_dispatch(tag, 400, 180),
                   await self.count_billing(tag, charges, 180)]
        for service in ("ingest", "dispatch", "billing"):
            self.stack.start(service, "a")
        return Outcome("rebalance: second instance, then kill -9 the first", len(raw) + len(commands) + len(lifecycle),
                       2000 + 400 + charges, sum(r[0] for r in results), sum(r[1] for r in results),
                       recover_seconds=round(time.monotonic() - killed, 1))

    async def provider_faults(self) -> Outcome:
        tag = f"prov{uuid.uuid4().hex[:4]}"
        commands = self.commands(tag, 400)
        modes = [("timeout", {}), ("503", {}), ("429", {"retry_after": 0.2}), ("reset", {})]
        for i, (mode, extra) in enumerate(modes):
            self.stack.set_faults(mode=mode, probability=0.3, remaining=15, **extra)
            await publish(self.bootstrap, DISPATCH_COMMANDS.name, commands[i * 100:(i + 1) * 100])
            await asyncio.sleep(2)
        self.stack.set_faults(mode="none")
        lost, dup, elapsed = await self.count_dispatch(tag, 400, 240)
        return Outcome("provider faults: timeouts, 503, 429, resets", 400, 400, lost, dup,
                       recover_seconds=round(elapsed, 1))

    # --- bad input and security ---------------------------------------------------------------------
    async def fuzz(self) -> Outcome:
        tag = f"fuzz{uuid.uuid4().hex[:4]}"
        before = {t: len(await read_topic(self.bootstrap, f"{t}.dlq", idle=0.3))
                  for t in (INGEST_RAW.name, DISPATCH_COMMANDS.name, BILLING_LIFECYCLE.name)}
        corpora = {
            INGEST_RAW.name: fuzz.ingest_corpus(),
            BILLING_LIFECYCLE.name: fuzz.billing_corpus(),
            DISPATCH_COMMANDS.name: fuzz.dispatch_corpus(self.token, self.channels[0], self.run),
        }
        good_raw = self.raw_events(tag, 100)
        good_commands = self.commands(tag, 50)
        good_lifecycle, charges = self.lifecycle(tag, 5, 6)
        goods = {INGEST_RAW.name: good_raw, DISPATCH_COMMANDS.name: good_commands,
                 BILLING_LIFECYCLE.name: good_lifecycle}
        bad_total = 0
        for topic, corpus in corpora.items():
            mixed: list[tuple[bytes | None, bytes | None]] = []
            good = goods[topic]
            step = max(1, len(good) // (len(corpus) + 1))
            for i, (_, value) in enumerate(corpus):
                mixed += good[i * step:(i + 1) * step]
                key = good[0][0] if good else None
                mixed.append((key, value))  # billing needs the tenant key to reach the same partition
            mixed += good[len(corpus) * step:]
            bad_total += len(corpus)
            await publish(self.bootstrap, topic, mixed)
        results = [await self.count_ingest(tag, 100), await self.count_dispatch(tag, 50),
                   await self.count_billing(tag, charges)]
        await asyncio.sleep(2)
        dead = 0
        reasons: Counter[str] = Counter()
        for topic in corpora:
            records = await read_topic(self.bootstrap, f"{topic}.dlq", idle=1.0)
            new = [orjson.loads(r.value) for r in records[before[topic]:]]
            dead += len(new)
            reasons.update(d["error"]["code"] for d in new)
        alive = all(self.stack.alive(f"{s}-a") for s in ("ingest", "dispatch", "billing"))
        return Outcome("fuzz corpus on every input topic", bad_total + sum(len(g) for g in goods.values()),
                       100 + 50 + charges, sum(r[0] for r in results), sum(r[1] for r in results),
                       bad_inputs=bad_total, dead_lettered=dead,
                       notes={"workers_alive": alive, "reasons": dict(reasons)})

    async def tokens(self) -> Outcome:
        tag = f"auth{uuid.uuid4().hex[:4]}"
        ch = self.channels[1]
        cases = {
            "missing": {"command_id": f"{self.run}-{tag}-missing", "channel_id": ch, "to": "5511999990000",
                        "message": {"kind": "text", "body": "oi"}},
            "wrong": {"command_id": f"{self.run}-{tag}-wrong", "channel_id": ch, "token": "guess-123",
                      "to": "5511999990000", "message": {"kind": "text", "body": "oi"}},
            "other-tenant": {"command_id": f"{self.run}-{tag}-other", "channel_id": ch,
                             "token": "another-tenants-token", "to": "5511999990000",
                             "message": {"kind": "text", "body": "oi"}},
        }
        await publish(self.bootstrap, DISPATCH_COMMANDS.name, [(ch.encode(), orjson.dumps(c)) for c in cases.values()])
        deadline = time.monotonic() + 60
        refused: dict[str, str] = {}
        while time.monotonic() < deadline and len(refused) < len(cases):
            for r in await read_topic(self.bootstrap, DISPATCH_RESULTS.name, idle=0.5):
                e = orjson.loads(r.value)
                if e["command_id"].startswith(f"{self.run}-{tag}-") and e["state"] == "rejected":
                    refused[e["command_id"]] = e["error"]["code"]
            await asyncio.sleep(0.5)
        sent = [k for k in self.stack.deliveries() if k.startswith(f"{self.run}-{tag}-")]
        counted = _metric_sum(self.stack.metrics("dispatch-a"), "apiplus_dispatch_rejects_total")
        return Outcome("missing, wrong and other-tenant tokens", len(cases), 0, 0, len(sent),
                       bad_inputs=len(cases), dead_lettered=len(refused),
                       notes={"codes": refused, "rejects_counted_by_this_instance": counted})

    async def leaks(self) -> Outcome:
        """Secrets in any topic we write, any log, any metric; ids or phone numbers in metrics."""
        # Upstream's own topics carry the tokens and keys by design; everything apiplus writes must not.
        inputs = {INGEST_RAW.name, DISPATCH_COMMANDS.name, BILLING_LIFECYCLE.name, REGISTRY_CHANNELS.name}
        declared = {t.name for t in TOPICS} | {t.dlq for t in DLQ_SOURCES}
        existing = set(await all_topics(self.bootstrap))
        topics = sorted((declared - inputs) & existing)
        found: Counter[str] = Counter()
        for topic in topics:
            for record in await read_topic(self.bootstrap, topic, idle=0.3, committed=False):
                blob = (record.value or b"") + (record.key or b"")
                for secret in self.secrets:
                    if secret.encode() in blob:
                        found[f"topic {topic}"] += 1
        logs = self.stack.log_text()
        for secret in self.secrets:
            if secret.encode() in logs:
                found["logs"] += 1
        metric_texts = [self.stack.metrics(f"{s}-a") for s in ("ingest", "dispatch", "billing")]
        for text in metric_texts:
            labels = " ".join(re.findall(r"\{([^}]*)\}", text))
            if any(secret in text for secret in self.secrets):
                found["metrics: secret"] += 1
            if re.search(r'="\+?\d{8,}"', labels):
                found["metrics: phone number"] += 1
            if any(ch in labels for ch in self.channels) or f"chaos-{self.run}" in labels:
                found["metrics: channel or tenant id"] += 1
        return Outcome("leak scan: topics, logs, metrics", len(topics), 0, 0, 0, leaks=sum(found.values()),
                       notes={"topics_scanned": len(topics), "found": dict(found)})


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
