"""`make bench`: the webhook ingress against a bare aiohttp handler that answers 200 without Kafka (the ceiling).

One local load generator posts the same real-size, validly signed Cloud API bodies to both, in the same
run; the rate is measured between 10% and 90% of the answers. Then the ingress is driven open-loop at
half its measured maximum and each request's time to answer (= time to the broker's acknowledgement)
gives p50/p99; the ceiling is driven at the same rate, to show what the machine alone adds to the tail.
Every 200 must be a record on the topic: the run checks the topic's end offsets.

`python -m bench.ingress ceiling PORT` runs the ceiling server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from chaos.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
APP_SECRET = "bench-app-secret-0123456789"
PARTITIONS = 6
CHANNELS = 200
CONCURRENCY = 64
LATENCY_SECONDS = 10.0


def cloudapi_body(i: int) -> bytes:
    """A typical inbound text message webhook (about 650 bytes), shaped as Meta sends it."""
    channel = f"10{i % CHANNELS:013d}"
    text = f"Olá! Gostaria de saber o status do meu pedido número {i}. " * 3
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550783881", "phone_number_id": channel},
                  "contacts": [{"profile": {"name": "Ana Beatriz Souza"}, "wa_id": "5511988887777"}],
                  "messages": [{"from": "5511988887777", "id": f"wamid.HBgLMTY0NjcwNDM1OTUVAgASGBQzQTRBNjU{i:012d}",
                                "timestamp": str(1764234000 + i), "type": "text", "text": {"body": text}}]},
        "field": "messages"}]}]})


def signed(body: bytes) -> tuple[bytes, dict[str, str]]:
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


class Server:
    """The process under test (ingress or ceiling), on its own port."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        env = {k: v.replace("{port}", str(self.port)) for k, v in env.items()}
        self.proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, **env}, cwd=ROOT,
                                     stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"{argv} did not become ready")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ingress(bootstrap: str, topic: str, logs: Path) -> Server:
    return Server(["-m", "services.cli", "ingest", "webhook"], {
        "APIPLUS_KAFKA_BOOTSTRAP": bootstrap, "APIPLUS_INGEST_WEBHOOK_PORT": "{port}",
        "APIPLUS_INGEST_RAW_TOPIC": topic, "APIPLUS_INGEST_CLOUDAPI_APP_SECRET": APP_SECRET,
        "APIPLUS_LOG_LEVEL": "WARNING"}, logs / "ingress.log")


def ceiling(logs: Path) -> Server:
    return Server(["-m", "bench.ingress", "ceiling", "{port}"], {}, logs / "ingress-ceiling.log")


async def blast(url: str, requests: list[tuple[bytes, dict[str, str]]]) -> tuple[float, dict[int, int]]:
    """Closed loop, CONCURRENCY clients: (answers per second between 10% and 90%, answers by status)."""
    n = len(requests)
    pending = iter(requests)
    codes: dict[int, int] = {}
    marks: list[float] = []

    async def client(session: aiohttp.ClientSession) -> None:
        for body, headers in pending:
            async with session.post(url + "/webhooks/cloudapi", data=body, headers=headers) as resp:
                await resp.read()
                codes[resp.status] = codes.get(resp.status, 0) + 1
            marks.append(time.perf_counter())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
    return 0.8 * n / (marks[int(0.9 * n) - 1] - marks[int(0.1 * n)]), codes


async def paced(url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float) -> dict[str, Any]:
    """Open loop at `rate` requests/s: each request's time to its answer, in ms."""
    times: list[float] = []
    codes: dict[int, int] = {}

    async def one(session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        async with session.post(url + "/webhooks/cloudapi", data=body, headers=headers) as resp:
            await resp.read()
            codes[resp.status] = codes.get(resp.status, 0) + 1
        times.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        start = time.perf_counter()
        for i, (body, headers) in enumerate(requests):
            delay = start + i / rate - time.perf_counter()
            if delay > 0.002:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, body, headers)))
        await asyncio.gather(*tasks)
    times.sort()
    return {"rate": rate, "requests": len(times), "codes": {str(k): v for k, v in codes.items()},
            "p50_ms": times[len(times) // 2],
            "p99_ms": times[max(0, int(len(times) * 0.99) - 1)]}


async def records_on(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def bench(bootstrap: str, logs: Path, scale: float, runs: int) -> dict[str, Any]:
    topic = f"bench.ingress.{uuid.uuid4().hex[:6]}.raw"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    n = max(2000, int(20_000 * scale))
    requests = [signed(cloudapi_body(i)) for i in range(n)]
    print(f"bench: ingress: {n} signed Cloud API bodies of ~{len(requests[0][0])} bytes, concurrency {CONCURRENCY}",
          flush=True)
    rates: dict[str, list[float]] = {"ingress": [], "ceiling": []}
    stored = 0
    for r in range(runs):
        for name, start in (("ingress", lambda: ingress(bootstrap, topic, logs)), ("ceiling", lambda: ceiling(logs))):
            server = start()
            try:
                rate, codes = await blast(server.url, requests)
            finally:
                server.close()
            if codes != {200: n}:
                raise RuntimeError(f"{name} answered {codes}")
            stored += n if name == "ingress" else 0
            rates[name].append(rate)
        print(f"bench:   ingress run {r + 1}/{runs}: ingress {rates['ingress'][-1]:,.0f}/s, "
              f"ceiling {rates['ceiling'][-1]:,.0f}/s", flush=True)
    half = statistics.median(rates["ingress"]) / 2
    count = max(200, int(half * LATENCY_SECONDS))
    paced_requests = [signed(cloudapi_body(n + i)) for i in range(count)]
    latencies = {}
    # The ceiling at the same rate shows what the machine alone adds to the tail.
    for name, start in (("ingress", lambda: ingress(bootstrap, topic, logs)), ("ceiling", lambda: ceiling(logs))):
        server = start()
        try:
            latencies[name] = await paced(server.url, paced_requests, half)
        finally:
            server.close()
    latency = latencies["ingress"]
    stored += latency["codes"].get("200", 0)
    on_topic = await records_on(bootstrap, topic)
    if on_topic != stored:
        raise RuntimeError(f"{stored} requests answered 200 but {on_topic} records on {topic}")
    ratio = statistics.median(rates["ingress"]) / statistics.median(rates["ceiling"])
    result = {"requests": n, "body_bytes": len(requests[0][0]), "concurrency": CONCURRENCY,
              "rates_per_second": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                   for k, v in rates.items()},
              "ratio": ratio, "latency_at_half_load": latency,
              "ceiling_latency_at_half_load": latencies["ceiling"], "records_on_topic": on_topic,
              "targets": {"ratio": 0.5, "p99_ms": 50}}
    print(f"bench: ingress {ratio:.2f}x ceiling ({statistics.median(rates['ingress']):,.0f}/s vs "
          f"{statistics.median(rates['ceiling']):,.0f}/s), time to ack at half load ({half:,.0f}/s): "
          f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms (ceiling at that rate: p50 "
          f"{latencies['ceiling']['p50_ms']:.1f} ms, p99 {latencies['ceiling']['p99_ms']:.1f} ms); "
          f"{on_topic} records stored = 200s",
          flush=True)
    return result


def serve_ceiling(port: int) -> None:
    """A bare aiohttp handler that reads the body and answers 200: what HTTP alone costs, on uvloop."""
    import uvloop
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"stored": 1})

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_post("/webhooks/cloudapi", accept)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    if sys.argv[1:2] == ["ceiling"]:
        serve_ceiling(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.ingress ceiling PORT (the benchmark itself runs from bench.run)")
