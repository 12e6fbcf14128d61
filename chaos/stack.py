"""The real stack for fault tests: the three workers and the simulator as processes, on the project's topics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from apiplus.kafka import KafkaClientConfig, KafkaClients

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "dispatch", "billing")
PROVIDER_SECRETS = {
    "APIPLUS_DISPATCH_CLOUDAPI_TOKEN": "chaos-cloudapi-provider-token-7f3a",
    "APIPLUS_DISPATCH_EVOLUTION_APIKEY": "chaos-evolution-provider-key-9b1c",
    "APIPLUS_DISPATCH_UAZAPI_TOKEN": "chaos-uazapi-provider-token-2d8e",
    "APIPLUS_DISPATCH_SIMULATOR_TOKEN": "chaos-simulator-provider-token-5e6f",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(self, bootstrap: str, redis_url: str, logs: Path) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.sim_port = free_port()
        self.sim_log = logs / "simulator.jsonl"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def env(self, service: str, port: int) -> dict[str, str]:
        sim = self.simulator_url
        return {
            **os.environ,
            "APIPLUS_KAFKA_BOOTSTRAP": self.bootstrap,
            "APIPLUS_REDIS_URL": self.redis_url,
            f"APIPLUS_{service.upper()}_HTTP_PORT": str(port),
            "APIPLUS_INGEST_TICK_SECONDS": "2",
            "APIPLUS_BILLING_DUE_DAY_TIMER": "false",
            "APIPLUS_DISPATCH_PACING_ENABLED": "false",
            "APIPLUS_DISPATCH_SIMULATOR_URL": sim,
            "APIPLUS_DISPATCH_CLOUDAPI_URL": sim,
            "APIPLUS_DISPATCH_EVOLUTION_URL": sim,
            "APIPLUS_DISPATCH_UAZAPI_URL": sim,
            "APIPLUS_DISPATCH_HTTP_TIMEOUT_SECONDS": "2",
            "APIPLUS_DISPATCH_BACKOFF_BASE_SECONDS": "0.1",
            "APIPLUS_DISPATCH_RETRY_DELAY_SECONDS": "1",
            "APIPLUS_DISPATCH_IDEMPOTENT_PROVIDERS": "simulator",
            **PROVIDER_SECRETS,
        }

    def start_simulator(self) -> None:
        self.procs["simulator"] = self._spawn("simulator", [
            "dispatch", "simulator", "--port", str(self.sim_port), "--log", str(self.sim_log)], dict(os.environ))
        self._wait_http(self.sim_port, "/healthz")

    def start(self, service: str, instance: str = "a") -> None:
        name = f"{service}-{instance}"
        port = self.ports.setdefault(name, free_port())
        self.procs[name] = self._spawn(name, [service, "run"], self.env(service, port))

    def wait_ready(self, names: Iterable[str], timeout: float = 90) -> None:
        for name in names:
            self._wait_http(self.ports[name], "/readyz", timeout)

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(45)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def metrics(self, name: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def set_faults(self, **faults: Any) -> None:
        request = urllib.request.Request(
            self.simulator_url + "/_sim/faults", data=orjson.dumps(faults), method="POST",
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()

    def deliveries(self) -> Counter[str]:
        if not self.sim_log.exists():
            return Counter()
        return Counter(orjson.loads(line)["idempotency_key"] for line in self.sim_log.read_bytes().splitlines()
                       if line.strip() and not orjson.loads(line)["replay"])

    def log_text(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.logs.glob("*.log"))

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "services.cli", *args], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def _wait_http(port: int, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"nothing answered 200 on :{port}{path} within {timeout:.0f}s")


async def publish(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], **options: Any
) -> int:
    """Produce (key, value) records idempotently; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                **{"linger_ms": 5, "max_request_size": 2 * 1024 * 1024, **options})
    await producer.start()
    n = 0
    try:
        for key, value in records:
            await producer.send(topic, value=value, key=key)
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def read_topic(bootstrap: str, topic: str, *, idle: float = 1.0, committed: bool = True) -> list[Any]:
    """Every record of a topic, from the beginning until it has been quiet for `idle` seconds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                isolation_level="read_committed" if committed else "read_uncommitted",
                                fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    records: list[Any] = []
    try:
        clients = KafkaClients(KafkaClientConfig(bootstrap))
        partitions = await clients.partitions_for(topic)
        for _ in range(30):
            if partitions:
                break
            await asyncio.sleep(0.1)
            partitions = await clients.partitions_for(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = [r for rs in batch.values() for r in rs]
            if got:
                records += got
                quiet_since = time.monotonic()
            elif all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                break
    finally:
        await consumer.stop()
    return records


async def all_topics(bootstrap: str) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return sorted(await consumer.topics())
    finally:
        await consumer.stop()
