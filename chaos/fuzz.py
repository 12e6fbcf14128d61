"""Bad input for every input topic: each record must land in that topic's DLQ with a reason."""

from __future__ import annotations

import orjson

SECRET_APIKEY = "chaos-evolution-instance-apikey-41c0"
SECRET_UAZ_TOKEN = "chaos-uazapi-instance-token-77aa"


def _common_garbage(tag: str) -> list[tuple[str, bytes | None]]:
    return [
        (f"{tag}-truncated", b'{"event": "messages.upsert", "instance": "x", "data": {"key": '),
        (f"{tag}-invalid-utf8", b'{"event": "\xff\xfe\xfd"}'),
        (f"{tag}-binary", bytes(range(256)) * 4),
        (f"{tag}-deep-nesting", b"[" * 50_000 + b"]" * 50_000),
        (f"{tag}-not-an-object", b'["a", 1, null]'),
        (f"{tag}-null-value", None),
        (f"{tag}-empty", b""),
    ]


def ingest_corpus() -> list[tuple[str, bytes | None]]:
    """Raw gateway events that cannot be normalised (secrets included, as gateways send them)."""
    bad = _common_garbage("ingest")
    bad += [
        ("ingest-wrong-dialect", orjson.dumps({"update_id": 1, "message": {"text": "telegram?"}})),
        ("ingest-evolution-no-instance", orjson.dumps({"event": "messages.upsert", "apikey": SECRET_APIKEY,
                                                       "data": {"key": {"id": "x"}}})),
        ("ingest-cloud-no-phone-number-id", orjson.dumps({"object": "whatsapp_business_account", "entry": [
            {"changes": [{"field": "messages", "value": {"metadata": {}}}]}]})),
        ("ingest-wrong-types", orjson.dumps({"event": "messages.upsert", "instance": "x", "apikey": SECRET_APIKEY,
                                             "date_time": "2026-11-27T09:00:00Z",
                                             "data": {"key": {"remoteJid": 5511, "fromMe": "no", "id": 7},
                                                      "messageTimestamp": "soon"}})),
        ("ingest-uazapi-bad-status", orjson.dumps({"EventType": "connection", "instanceName": "x",
                                                   "token": SECRET_UAZ_TOKEN, "instance": {"status": 42}})),
        ("ingest-huge", orjson.dumps({"event": "messages.upsert", "instance": "x", "apikey": SECRET_APIKEY,
                                      "data": {"blob": "x" * 700_000}})),
    ]
    return bad


def billing_corpus() -> list[tuple[str, bytes | None]]:
    bad = _common_garbage("billing")
    bad += [
        ("billing-unknown-type", orjson.dumps({"event_id": "f1", "type": "channel.exploded", "tenant_id": "t",
                                               "occurred_at": "2026-11-27T09:00:00Z"})),
        ("billing-missing-event-id", orjson.dumps({"type": "channel.activated", "tenant_id": "t",
                                                   "occurred_at": "2026-11-27T09:00:00Z", "channel_id": "c"})),
        ("billing-bad-plan", orjson.dumps({"event_id": "f2", "type": "tenant.updated", "tenant_id": "t",
                                           "occurred_at": "2026-11-27T09:00:00Z", "plan": "gold",
                                           "invoice_due_day": 40})),
        ("billing-bad-time", orjson.dumps({"event_id": "f3", "type": "channel.activated", "tenant_id": "t",
                                           "occurred_at": "yesterday", "channel_id": "c"})),
        ("billing-huge", orjson.dumps({"event_id": "f4", "type": "channel.activated", "tenant_id": "t" * 700_000,
                                       "occurred_at": "2026-11-27T09:00:00Z", "channel_id": "c"})),
    ]
    return bad


def dispatch_corpus(token: str, channel: str, run: str) -> list[tuple[str, bytes | None]]:
    """Commands over every limit (with a valid token, so validation, not auth, refuses them)."""

    def command(name: str, message: dict[str, object], **extra: object) -> tuple[str, bytes]:
        body = {"command_id": f"{run}-fuzz-{name}", "channel_id": channel, "token": token, "to": "5511999990000",
                "message": message, **extra}
        return f"dispatch-{name}", orjson.dumps(body)

    buttons = [{"id": f"b{i}", "title": f"Opção {i}"} for i in range(4)]
    rows = [{"id": f"r{i}", "title": f"Linha {i}"} for i in range(11)]
    bad = _common_garbage("dispatch")
    bad += [
        command("four-buttons", {"kind": "buttons", "body": "?", "buttons": buttons}),
        command("long-button-title", {"kind": "buttons", "body": "?", "buttons": [{"id": "a", "title": "x" * 21}]}),
        command("same-titles", {"kind": "buttons", "body": "?", "buttons": [{"id": "a", "title": "Sim"},
                                                                            {"id": "b", "title": "Sim"}]}),
        command("eleven-rows", {"kind": "list", "body": "?", "button": "Ver", "sections": [{"rows": rows}]}),
        command("untitled-sections", {"kind": "list", "body": "?", "button": "Ver",
                                      "sections": [{"rows": rows[:1]}, {"rows": rows[1:2]}]}),
        command("long-row-title", {"kind": "list", "body": "?", "button": "Ver",
                                   "sections": [{"rows": [{"id": "a", "title": "x" * 25}]}]}),
        command("long-list-button", {"kind": "list", "body": "?", "button": "x" * 21,
                                     "sections": [{"rows": rows[:1]}]}),
        command("ftp-url", {"kind": "cta_url", "body": "?", "display_text": "Abrir", "url": "ftp://example.com"}),
        command("empty-copy-code", {"kind": "copy_code", "body": "Pix", "code": ""}),
        command("long-body", {"kind": "buttons", "body": "x" * 1025, "buttons": buttons[:1]}),
        command("huge-text", {"kind": "text", "body": "x" * 700_000}),
        command("bad-recipient", {"kind": "text", "body": "oi"}, to="+55 11 99999-0000"),
        command("unknown-kind", {"kind": "carousel", "body": "?"}),
        ("dispatch-no-command-id", orjson.dumps({"channel_id": channel, "token": token, "to": "5511999990000",
                                                 "message": {"kind": "text", "body": "oi"}})),
    ]
    return bad
