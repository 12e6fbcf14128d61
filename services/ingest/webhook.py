"""`apiplus ingest webhook`: the gateways' webhooks over HTTP, verified, onto the raw topic.

A request is answered 200 only once the broker has acknowledged every record it produced (acks=all,
idempotent producer); a broker that is down or slow past the deadline gets the gateway a 503 with
Retry-After, so the gateway retries instead of the event being lost. Refused requests produce nothing.
Logs and metrics name routes, never paths: a path may carry the ingress key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from apiplus.decode import parse_object
from apiplus.errors import ErrorCode, PermanentError
from apiplus.jsonlog import setup_logging
from apiplus.kafka import KafkaClientConfig
from apiplus.runtime import serve
from apiplus.settings import load_settings
from services.ingest.metrics import WebhookMetrics
from services.ingest.settings import WebhookSettings
from services.ingest.worker import DIALECT_HEADERS

log = logging.getLogger("apiplus.ingest.webhook")
DIALECT_HEADER = DIALECT_HEADERS[0]
GATEWAYS = ("cloudapi", "evolution", "uazapi")
PROBES = frozenset({"/metrics", "/healthz", "/readyz"})
PROBE_SECONDS = 1.0  # how soon a broker outage (and its end) changes the answers
SIGNATURE_HEADER = "X-Hub-Signature-256"
# Where each gateway names the channel (the record key); Cloud API's is inside every change.
CHANNEL_FIELDS = {"evolution": "instance", "uazapi": "instanceName"}
HTTP_CODES = {400: "bad_request", 401: str(ErrorCode.UNAUTHORIZED), 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: str(ErrorCode.PAYLOAD_TOO_LARGE), 503: "unavailable"}

Record = tuple[bytes | None, bytes]


# --- pure: routes, signatures, channels -------------------------------------------------------------
def route_of(path: str) -> str | None:
    """The metric label for a path: a gateway name, `unknown`, or None for the probes (not counted)."""
    if path in PROBES:
        return None
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] == "webhooks" and parts[2] in GATEWAYS:
        return parts[2]
    return "unknown"


def signature_matches(body: bytes, header: str | None, secret: str) -> bool:
    """X-Hub-Signature-256 is `sha256=` + hex HMAC-SHA256 of the raw body with the app secret."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha256=").strip().lower().encode())


def secret_equals(given: str | None, secret: SecretStr | None) -> bool:
    """Constant-time comparison of digests (lengths do not leak); an unset secret matches nothing."""
    if secret is None or given is None:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(secret.get_secret_value().encode()).digest())


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def cloudapi_records(raw: bytes, body: dict[str, Any]) -> list[Record]:
    """One record per channel (phone_number_id), each still a Cloud API body.

    A body that names one channel (the usual case) goes on byte for byte; one that names several is
    split, keeping each entry's other fields and the order of its changes. Changes that name no channel
    (account-level fields) travel together without a key.
    """
    entries = body.get("entry")
    if not isinstance(entries, list):
        return [(None, raw)]
    by_channel: dict[str | None, list[dict[str, Any]]] = {}
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            by_channel.setdefault(None, []).append(entry)
            continue
        grouped: dict[str | None, list[Any]] = {}
        for change in changes:
            grouped.setdefault(_phone_number_id(change), []).append(change)
        for channel, kept in grouped.items():
            by_channel.setdefault(channel, []).append({**entry, "changes": kept})
    if len(by_channel) <= 1:
        channel = next(iter(by_channel), None)
        return [(channel.encode() if channel else None, raw)]
    return [(channel.encode() if channel else None, orjson.dumps({**body, "entry": kept}))
            for channel, kept in by_channel.items()]


def _phone_number_id(change: Any) -> str | None:
    value = change.get("value") if isinstance(change, dict) else None
    metadata = value.get("metadata") if isinstance(value, dict) else None
    channel = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
    return channel if isinstance(channel, str) and channel else None


def shard(key: bytes | None, shards: int) -> int:
    """Which producer carries a channel: always the same one, so a channel's records keep their order."""
    return zlib.crc32(key or b"") % shards


def gateway_records(route: str, raw: bytes, body: dict[str, Any]) -> list[Record]:
    if route == "cloudapi":
        return cloudapi_records(raw, body)
    channel = body.get(CHANNEL_FIELDS[route])
    # A body without its channel still goes on: ingest dead-letters it with the reason.
    return [(channel.encode() if isinstance(channel, str) and channel else None, raw)]


# --- the producer -------------------------------------------------------------------------------------
class Unavailable(Exception):
    """The records are not known to be stored: the gateway must retry."""


class RawProducer:
    """Idempotent acks=all producers that (re)connect in the background; a runtime component.

    aiokafka keeps one produce request in flight per broker, so concurrent requests queue behind it;
    `APIPLUS_INGEST_WEBHOOK_PRODUCERS` producers give that many requests in flight. A channel always
    goes through the same producer, so its records keep their order.

    A delivery that fails (rather than outlasting our deadline) leaves an idempotent aiokafka producer
    with a gap in its sequence numbers, and every later batch is refused as out of order; such a
    producer is replaced. While the broker is known to be down, requests are refused at once instead of
    piling records into the producers.
    """

    def __init__(self, settings: WebhookSettings, metrics: WebhookMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.kafka = KafkaClientConfig.from_settings(settings, "apiplus-ingest-webhook")
        self.connected = False
        self.pending = 0
        self._producers: list[AIOKafkaProducer] = []
        self._broken: set[AIOKafkaProducer] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        producers: list[AIOKafkaProducer] = []
        try:
            for _ in range(self.settings.webhook_producers):
                producer = await self._connect()
                if producer is None:
                    return
                producers.append(producer)
            self._producers = producers
            while not self._stopping.is_set():
                await self._probe(producers[0])
                if self.connected:
                    await self._replace_broken(producers)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), PROBE_SECONDS)
        finally:
            self._producers = []  # new requests get 503 from here on
            self.connected = False
            self.metrics.ready.set(0)
            # Flush what is in flight; anything still unacknowledged after the deadline was answered 503.
            await self._close(*producers)

    async def _replace_broken(self, producers: list[AIOKafkaProducer]) -> None:
        for index, broken in enumerate(producers):
            if broken not in self._broken:
                continue
            replacement = await self._connect()
            if replacement is None:
                return
            producers[index] = replacement
            log.warning("kafka producer replaced after a failed delivery", extra={"producer": index})
            self.metrics.producer_replacements.inc()
            await self._close(broken)
        self._broken.clear()  # failures reported late by producers already replaced

    async def _close(self, *producers: AIOKafkaProducer) -> None:
        with contextlib.suppress(TimeoutError, KafkaError):
            await asyncio.wait_for(asyncio.gather(*(p.stop() for p in producers), return_exceptions=True),
                                   self.settings.webhook_ack_timeout_seconds * 2)

    async def _connect(self) -> AIOKafkaProducer | None:
        delay = 0.5
        while not self._stopping.is_set():
            producer = AIOKafkaProducer(
                **self.kafka.options(),
                acks="all",
                enable_idempotence=True,
                linger_ms=self.settings.webhook_linger_ms,
                max_request_size=self.settings.webhook_max_body_bytes + 64 * 1024,
                request_timeout_ms=int(max(self.settings.webhook_ack_timeout_seconds, 5) * 1000),
            )
            try:
                await producer.start()
                log.info("kafka connected", extra={"topic": self.settings.raw_topic})
                return producer
            except KafkaError as exc:
                log.warning("kafka unreachable; requests are answered 503 until it is back",
                            extra={"error": type(exc).__name__, "retry_in_s": delay})
                await self._close(producer)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 10.0)
        return None

    async def _probe(self, producer: AIOKafkaProducer) -> None:
        try:
            cluster = await asyncio.wait_for(producer.client.fetch_all_metadata(), 3)
            self.connected = self.settings.raw_topic in cluster.topics()
        except (TimeoutError, KafkaError):
            self.connected = False
        self.metrics.ready.set(1 if self.connected else 0)

    async def store(self, records: Sequence[Record], dialect: str) -> None:
        """Return once the broker acknowledged every record; raise Unavailable otherwise."""
        producers = self._producers
        if not producers or not self.connected or self.pending + len(records) > self.settings.webhook_max_pending:
            raise Unavailable
        headers = [(DIALECT_HEADER, dialect.encode())]
        futures: list[asyncio.Future[Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.webhook_ack_timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                for key, value in records:
                    producer = producers[shard(key, len(producers))]
                    try:
                        future = await producer.send(self.settings.raw_topic, value=value, key=key, headers=headers)
                    except KafkaTimeoutError:
                        raise
                    except KafkaError:
                        self._broken.add(producer)
                        raise
                    self._track(future, producer)
                    futures.append(future)
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable from exc
        # Waiting must not cancel the deliveries: a record may still be stored after the deadline, and
        # the idempotent producer then writes it once (the gateway's retry is a new, deduplicated event).
        done, not_done = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        if not_done or any(f.exception() is not None for f in done):
            raise Unavailable

    def _track(self, future: asyncio.Future[Any], producer: AIOKafkaProducer) -> None:
        self.pending += 1
        self.metrics.pending.inc()

        def settled(f: asyncio.Future[Any]) -> None:
            self.pending -= 1
            self.metrics.pending.dec()
            if not f.cancelled() and f.exception() is not None:  # retrieved; the request got its 503
                self._broken.add(producer)

        future.add_done_callback(settled)


# --- HTTP ---------------------------------------------------------------------------------------------
def error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"error": {"code": code or HTTP_CODES.get(status, "error"), "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


@dataclass
class Ingress:
    settings: WebhookSettings
    metrics: WebhookMetrics
    producer: RawProducer

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.webhook_max_body_bytes, middlewares=[self._middleware])
        app.router.add_route("GET", "/webhooks/cloudapi", self.verify)
        app.router.add_post("/webhooks/cloudapi", self.cloudapi)
        for gateway in ("evolution", "uazapi"):
            app.router.add_post(f"/webhooks/{gateway}", self._keyed(gateway))
            app.router.add_post(f"/webhooks/{gateway}/{{key}}", self._keyed(gateway))
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404, 405 and 413, as JSON
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = error(exc.status, exc.reason, headers=allow)
        route = route_of(request.path)
        if route is not None:
            self.metrics.requests(route, str(response.status)).inc()
        return response

    async def verify(self, request: web.Request) -> web.StreamResponse:
        """Meta's subscription check: echo hub.challenge when the verify token matches."""
        query = request.query
        challenge = query.get("hub.challenge")
        if (query.get("hub.mode") == "subscribe" and challenge is not None
                and secret_equals(query.get("hub.verify_token"), self.settings.cloudapi_verify_token)):
            return web.Response(text=challenge, content_type="text/plain")
        return error(403, "hub.mode or hub.verify_token does not match")

    async def cloudapi(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        secret = self.settings.cloudapi_app_secret
        header = request.headers.get(SIGNATURE_HEADER)
        if secret is None or not signature_matches(raw, header, secret.get_secret_value()):
            self.metrics.signature_failures("cloudapi", "missing" if not header else "mismatch").inc()
            return error(401, f"missing or wrong {SIGNATURE_HEADER}")
        return await self._accept("cloudapi", raw)

    def _keyed(self, gateway: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            given = request.match_info.get("key") or bearer(request.headers.get("Authorization"))
            if not secret_equals(given, self.settings.webhook_key):
                self.metrics.signature_failures(gateway, "missing" if given is None else "mismatch").inc()
                return error(401, "missing or wrong ingress key")
            return await self._accept(gateway, await request.read())

        return handle

    async def _accept(self, route: str, raw: bytes) -> web.StreamResponse:
        try:
            body = parse_object(raw, self.settings.webhook_max_body_bytes)
        except PermanentError as exc:
            status = 413 if exc.code == ErrorCode.PAYLOAD_TOO_LARGE else 400
            return error(status, exc.message, str(exc.code))
        records = gateway_records(route, raw, body)
        started = time.perf_counter()
        try:
            await self.producer.store(records, route)
        except Unavailable:
            retry = str(self.settings.webhook_retry_after_seconds)
            return error(503, "the event could not be stored; retry later", headers={"Retry-After": retry})
        self.metrics.ack_duration(route).observe(time.perf_counter() - started)
        self.metrics.body_bytes(route).observe(len(raw))
        self.metrics.records(route).inc(len(records))
        return web.Response(body=orjson.dumps({"stored": len(records)}), content_type="application/json")


def main() -> int:
    settings = load_settings(WebhookSettings)
    setup_logging("ingest-webhook", settings.log_level, settings.kafka_log_level)
    for name in ("cloudapi_verify_token", "cloudapi_app_secret", "webhook_key"):
        if getattr(settings, name) is None:
            log.warning("setting unset: its route refuses every request", extra={"setting": name})
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    producer = RawProducer(settings, metrics)
    ingress = Ingress(settings, metrics, producer)

    async def ready() -> dict[str, bool]:
        return {"kafka": producer.connected}

    return serve([producer], registry=registry, ready=ready, http_host=settings.webhook_host,
                 http_port=settings.webhook_port, app=ingress.app())
