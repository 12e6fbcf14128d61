"""The simulator's webhook side: remembers what it accepted and emits statuses, echoes and replies to Kafka.

Endpoints (added to the simulator's app):
- `POST /_sim/loop` `{"echo": bool, "statuses": ["delivered", "read"], "delay_ms": N, "instance": "name"}`:
  emit these for every message accepted from now on (`instance` names the channel where the request
  path does not: uazapi and the `simulator` provider);
- `POST /_sim/emit` `{"message_id", "events": [{"type": "status", "state"}, {"type": "echo"},
  {"type": "reply", "kind": "text" | "button_reply" | "list_reply", "text"?, "reply_id"?, "title"?,
  "quote"?}]}`: emit now, for one accepted message; answers with the payloads;
- `GET /_sim/accepted`: the accepted messages (id, dialect, instance, to, kind).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.dispatch import simwebhooks
from services.dispatch.simwebhooks import Accepted

MAX_REMEMBERED = 200_000


@dataclass
class AutoEmit:
    echo: bool = False
    statuses: list[str] = field(default_factory=list)
    delay_ms: int = 0


class GatewayLoop:
    def __init__(self, bootstrap: str | None, raw_topic: str = "apiplus.ingest.raw.v1",
                 default_instance: str = "simulator", **kafka_options: Any) -> None:
        self.bootstrap = bootstrap
        self.raw_topic = raw_topic
        self.default_instance = default_instance
        self.kafka_options = kafka_options
        self.auto = AutoEmit()
        self.accepted: collections.OrderedDict[str, Accepted] = collections.OrderedDict()
        self.emitted = 0
        self._producer: AIOKafkaProducer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/_sim/loop", self._configure)
        app.router.add_post("/_sim/emit", self._emit_request)
        app.router.add_get("/_sim/accepted", self._list)

    async def start(self) -> None:
        if self.bootstrap and self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all",
                                              **self.kafka_options)
            await self._producer.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # --- called by the simulator for every new (not replayed) message --------------------------------
    def on_accepted(self, provider: str, path: str, body: dict[str, Any], message_id: str) -> None:
        acc = simwebhooks.accepted(provider, path, body, message_id, self.default_instance)
        self.accepted[message_id] = acc
        while len(self.accepted) > MAX_REMEMBERED:
            self.accepted.popitem(last=False)
        if self.auto.echo or self.auto.statuses:
            task = asyncio.get_running_loop().create_task(self._auto(acc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _auto(self, acc: Accepted) -> None:
        payloads = []
        if self.auto.echo and acc.dialect != "cloudapi":
            payloads.append(simwebhooks.echo(acc))
        payloads += [simwebhooks.status(acc, state) for state in self.auto.statuses]
        for payload in payloads:
            if self.auto.delay_ms:
                await asyncio.sleep(self.auto.delay_ms / 1000)
            await self.emit(acc, payload)

    async def emit(self, acc: Accepted, payload: dict[str, Any]) -> None:
        if self._producer is None:
            raise RuntimeError("the simulator has no Kafka bootstrap to emit webhooks to")
        await (await self._producer.send(self.raw_topic, key=acc.instance.encode(), value=simwebhooks.encode(payload)))
        self.emitted += 1

    def payloads(self, acc: Accepted, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for event in events:
            kind = event.get("type")
            if kind == "status":
                out.append(simwebhooks.status(acc, str(event["state"])))
            elif kind == "echo":
                out.append(simwebhooks.echo(acc))
            elif kind == "reply":
                out.append(simwebhooks.reply(
                    acc, str(event.get("kind", "text")), text=event.get("text"), reply_id=event.get("reply_id"),
                    title=event.get("title"), quote=bool(event.get("quote", True)),
                ))
            else:
                raise ValueError(f"unknown event type {kind!r}")
        return out

    # --- HTTP ------------------------------------------------------------------------------------------
    async def _configure(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.auto = AutoEmit(echo=bool(data.get("echo", False)), statuses=list(data.get("statuses") or []),
                             delay_ms=int(data.get("delay_ms", 0)))
        if isinstance(data.get("instance"), str) and data["instance"]:
            self.default_instance = data["instance"]
        return web.json_response({**self.auto.__dict__, "instance": self.default_instance})

    async def _emit_request(self, request: web.Request) -> web.Response:
        data = await request.json()
        acc = self.accepted.get(str(data.get("message_id")))
        if acc is None:
            return web.json_response({"error": "no such accepted message"}, status=404)
        try:
            payloads = self.payloads(acc, list(data.get("events") or []))
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        for payload in payloads:
            await self.emit(acc, payload)
        return web.json_response({"emitted": payloads})

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response([{"message_id": a.message_id, "dialect": a.dialect, "instance": a.instance,
                                   "to": a.to, "kind": a.kind} for a in self.accepted.values()])
