"""Deterministic benchmark inputs: the same bytes go to a worker and to its baseline."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from services.dispatch.core import token_digest

BENCH_TOKEN = "bench-token"


def ingest_events(n: int, channels: int) -> Iterator[tuple[bytes, bytes]]:
    """Mixed raw gateway events: a third of each dialect, one in ten a connection update."""
    base = 1764234000
    for i in range(n):
        ch = f"ch{i % channels}"
        dialect = i % 3
        if i % 10 == 9:
            state = ("open", "close")[(i // 10) % 2]
            payload = {"event": "connection.update", "instance": ch, "apikey": "bench-secret",
                       # A connection update's id comes from its own time: one second apart, unique per run.
                       "date_time": f"2026-11-27T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
                       "data": {"instance": ch, "state": state, "statusReason": 428 if state == "close" else 200}}
        elif dialect == 0:
            payload = {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"field": "messages",
                       "value": {"messaging_product": "whatsapp",
                                 "metadata": {"display_phone_number": "155500", "phone_number_id": ch},
                                 "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5511988887777"}],
                                 "messages": [{"from": "5511988887777", "id": f"wamid.{i}", "timestamp": str(base + i),
                                               "type": "interactive", "interactive": {"type": "button_reply",
                                               "button_reply": {"id": "yes", "title": "Sim"}}}]}}]}]}
        elif dialect == 1:
            payload = {"event": "messages.upsert", "instance": ch, "apikey": "bench-secret",
                       "date_time": "2026-11-27T09:00:00Z",
                       "data": {"key": {"remoteJid": "5511977776666@s.whatsapp.net", "fromMe": False, "id": f"E{i}"},
                                "pushName": "Bia", "message": {"conversation": f"mensagem {i}"},
                                "messageType": "conversation", "messageTimestamp": base + i}}
        else:
            payload = {"EventType": "messages", "instanceName": ch, "token": "bench-secret",
                       "message": {"messageid": f"U{i}", "chatid": "5511966665555@s.whatsapp.net",
                                   "sender_pn": "5511966665555@s.whatsapp.net", "fromMe": False,
                                   "messageType": "ListResponseMessage", "text": "Pix", "buttonOrListid": "r1",
                                   "messageTimestamp": (base + i) * 1000}}
        yield ch.encode(), orjson.dumps(payload)


def billing_events(tenants: int, per_tenant: int) -> Iterator[tuple[bytes, bytes]]:
    """A tenant.updated then activations, round-robin over tenants so partitions interleave."""
    for step in range(per_tenant):
        for t in range(tenants):
            tenant = f"tenant{t}"
            if step == 0:
                event = {"event_id": f"{tenant}-u", "type": "tenant.updated", "occurred_at": "2026-11-01T00:00:00Z",
                         "tenant_id": tenant, "plan": "premium", "invoice_due_day": 30}
            else:
                event = {"event_id": f"{tenant}-a{step}", "type": "channel.activated",
                         "occurred_at": "2026-11-02T00:00:00Z", "tenant_id": tenant, "channel_id": f"{tenant}-c{step}"}
            yield tenant.encode(), orjson.dumps(event)


def registry_rows(channels: int) -> Iterator[tuple[bytes, bytes]]:
    digest = token_digest(BENCH_TOKEN)
    for c in range(channels):
        row = {"channel_id": f"ch{c}", "tenant_id": "bench", "token_sha256": digest, "provider": "simulator",
               "mode": "plus", "status": "active"}
        yield f"ch{c}".encode(), orjson.dumps(row)


def dispatch_command(run: str, i: int, channels: int) -> tuple[bytes, dict[str, object]]:
    ch = f"ch{i % channels}"
    kind = i % 3
    if kind == 0:
        message: dict[str, object] = {"kind": "text", "body": f"Pedido {i} confirmado"}
    elif kind == 1:
        message = {"kind": "buttons", "body": "Confirma?", "buttons": [{"id": "y", "title": "Sim"},
                                                                       {"id": "n", "title": "Não"}]}
    else:
        message = {"kind": "list", "body": "Escolha", "button": "Ver",
                   "sections": [{"rows": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]}]}
    return ch.encode(), {"command_id": f"{run}-{i}", "channel_id": ch, "token": BENCH_TOKEN, "to": "5511999990000",
                         "message": message}
