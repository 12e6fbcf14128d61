"""Fixtures for dispatch tests: a simulator on a free port, registry rows, a worker in-process or as a process."""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from services.dispatch.core import token_digest
from services.dispatch.simulator import Simulator
from tests.integration.kafkatools import bootstrap, redis_url, unique


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningSimulator:
    def __init__(self, log_path: Path) -> None:
        self.sim = Simulator(log_path)
        self.port = free_port()
        self.log_path = log_path
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.sim.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def entries(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [orjson.loads(line) for line in self.log_path.read_bytes().splitlines() if line.strip()]

    def deliveries(self) -> Counter[str]:
        """Distinct sends per command (replays of an Idempotency-Key are not new messages)."""
        return Counter(e["idempotency_key"].removeprefix(f"{RUN}-") for e in self.entries() if not e["replay"])


def dispatch_topics() -> dict[str, str]:
    base = unique("apiplus.dispatch")
    return {
        "commands_topic": f"{base}.commands",
        "retry_topic": f"{base}.retry",
        "results_topic": f"{base}.results",
        "registry_topic": f"{base}.registry",
        "health_topic": f"{base}.health",
        "progress_topic": f"{base}.progress",
    }


def dispatch_env(topics: dict[str, str], simulator_url: str, **extra: str) -> dict[str, str]:
    env = {
        "APIPLUS_KAFKA_BOOTSTRAP": bootstrap(),
        "APIPLUS_REDIS_URL": redis_url(),
        "APIPLUS_DISPATCH_HTTP_PORT": "0",
        "APIPLUS_DISPATCH_GROUP_ID": unique("dispatch-group"),
        "APIPLUS_DISPATCH_SIMULATOR_URL": simulator_url,
        "APIPLUS_DISPATCH_PACING_ENABLED": "false",
        **{f"APIPLUS_DISPATCH_{k.upper()}": v for k, v in topics.items()},
    }
    env.update(extra)
    return env


def channel_row(channel_id: str, token: str, *, mode: str = "plus", status: str = "active",
                provider: str = "simulator", pacing: dict[str, int] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"channel_id": channel_id, "tenant_id": f"tenant-{channel_id}",
                           "token_sha256": token_digest(token), "provider": provider, "mode": mode, "status": status}
    if pacing is not None:
        row["pacing"] = pacing
    return row


RUN = uuid.uuid4().hex[:8]  # command ids are remembered in Redis: each test run gets its own


def cid(name: str) -> str:
    return f"{RUN}-{name}"


def text_command(command_id: str, channel_id: str, token: str, body: str = "olá") -> dict[str, Any]:
    return {"command_id": cid(command_id), "channel_id": channel_id, "token": token, "to": "5511999990000",
            "message": {"kind": "text", "body": body}}
