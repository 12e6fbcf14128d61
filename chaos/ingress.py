"""`make chaos`: the webhook ingress while the broker stops and comes back, and forged or altered requests.

Every request must be answered 200 or 503; every request answered 200 must be on the raw topic exactly
once after the broker is back; forged signatures and genuine signatures replayed on an altered body must
all be refused (401) and produce nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from apiplus.topics import INGEST_RAW
from chaos.scenarios import Outcome
from chaos.stack import ROOT, Stack, free_port, read_topic

APP_SECRET = "chaos-webhook-app-secret-4c1d"
CLIENTS = 16


def body(tag: str, i: int) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": f"chaos-pnid-{i % 7}"},
            "messages": [{"from": "5511988887777", "id": f"{tag}-{i}", "timestamp": str(1764234000 + i),
                          "type": "text", "text": {"body": f"m{i}"}}]}}]}]})


def signature(payload: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()}


def start_ingress(stack: Stack) -> str:
    port = free_port()
    env = {**os.environ, "APIPLUS_KAFKA_BOOTSTRAP": stack.bootstrap, "APIPLUS_INGEST_WEBHOOK_PORT": str(port),
           "APIPLUS_INGEST_CLOUDAPI_APP_SECRET": APP_SECRET, "APIPLUS_INGEST_WEBHOOK_ACK_TIMEOUT_SECONDS": "3",
           "APIPLUS_INGEST_WEBHOOK_RETRY_AFTER_SECONDS": "1"}
    log = (stack.logs / "webhook.log").open("ab")
    stack.procs["webhook"] = subprocess.Popen([sys.executable, "-m", "services.cli", "ingest", "webhook"], env=env,
                                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the webhook ingress did not become ready")


async def broker_stop(stack: Stack, restart_broker: Callable[[], Awaitable[None]]) -> Outcome:
    tag = f"hook{uuid.uuid4().hex[:6]}"
    url = await asyncio.to_thread(start_ingress, stack)
    answers: dict[str, int] = {}  # message id -> status (0: no answer at all)
    stop = asyncio.Event()
    counter = iter(range(1_000_000))

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            i = next(counter)
            payload = body(tag, i)
            try:
                async with session.post(url + "/webhooks/cloudapi", data=payload, headers=signature(payload)) as r:
                    await r.read()
                    answers[f"{tag}-{i}"] = r.status
            except (aiohttp.ClientError, TimeoutError):
                answers[f"{tag}-{i}"] = 0
            if answers[f"{tag}-{i}"] == 503:
                await asyncio.sleep(0.2)  # a gateway backs off; keeps the outage from being a busy loop

    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(CLIENTS)]
        try:
            await asyncio.sleep(3)
            await restart_broker()
            back = time.monotonic()
            # Posting on until the ingress stores again, then a little more.
            while time.monotonic() - back < 60 and 200 not in list(answers.values())[-CLIENTS:]:
                await asyncio.sleep(0.5)
            recovered = time.monotonic() - back
            await asyncio.sleep(3)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        refused = await forged_and_altered(session, url, tag)
    records = await read_topic(stack.bootstrap, INGEST_RAW.name, idle=2.0, committed=False)
    on_topic: Counter[str] = Counter()
    for record in records:
        if record.value and tag.encode() in record.value:
            on_topic[orjson.loads(record.value)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]] += 1
    stored = [k for k, s in answers.items() if s == 200]
    codes = Counter(answers.values())
    unexpected = sum(n for code, n in codes.items() if code not in (200, 503))
    lost = sum(1 for k in stored if on_topic[k] == 0)
    duplicated = sum(on_topic[k] - 1 for k in stored if on_topic[k] > 1)
    forged_stored = sum(n for k, n in on_topic.items() if k.startswith(f"{tag}-forged"))
    log = (stack.logs / "webhook.log").read_bytes()
    ok = (unexpected == 0 and lost == 0 and duplicated == 0 and forged_stored == 0 and codes[200] > 0
          and codes[503] > 0 and refused["refused"] == refused["sent"] and APP_SECRET.encode() not in log)
    return Outcome("webhook ingress: broker stop mid-load; forged and altered requests", len(answers), len(stored),
                   lost, duplicated, recover_seconds=round(recovered, 1), bad_inputs=refused["sent"],
                   dead_lettered=refused["refused"],
                   notes={"ok": ok, "codes": {str(k): v for k, v in codes.items()}, "unexpected_answers": unexpected,
                          "answered_503_but_stored": sum(1 for k, s in answers.items() if s == 503 and on_topic[k]),
                          "forged_or_altered_stored": forged_stored, "secret_in_log": APP_SECRET.encode() in log})


async def forged_and_altered(session: aiohttp.ClientSession, url: str, tag: str) -> dict[str, int]:
    """Wrong secrets, no signature, and genuine signatures replayed on an altered body: all must be 401."""
    attempts = []
    for i in range(40):
        payload = body(f"{tag}-forged", i)
        genuine = body(tag, i)  # a body the ingress did accept, with its real signature
        attempts += [(payload, signature(payload, "guessed-secret")), (payload, {}),
                     (payload, signature(genuine)), (payload.replace(b'"m', b'"M'), signature(payload))]
    refused = 0
    for payload, headers in attempts:
        async with session.post(url + "/webhooks/cloudapi", data=payload, headers=headers) as r:
            await r.read()
            refused += r.status == 401
    return {"sent": len(attempts), "refused": refused}
