"""The offline commands as a user runs them: JSONL in, JSONL out, one error line per bad input, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def apiplus(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], input=stdin, capture_output=True,
                          cwd=ROOT, check=False, timeout=60)


def lines(raw: bytes) -> list[dict]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def test_ingest_normalize() -> None:
    good = orjson.dumps({"event": "messages.upsert", "instance": "i", "apikey": "SECRETKEY",
                         "data": {"key": {"remoteJid": "5511@s.whatsapp.net", "fromMe": False, "id": "X"},
                                  "message": {"conversation": "oi"}, "messageTimestamp": 1764234000}})
    result = apiplus("ingest", "normalize", stdin=good + b"\nnot json\n[1]\n{}\n")
    assert result.returncode == 0
    out = lines(result.stdout)
    assert [e["type"] for e in out] == ["message.received"]
    errors = lines(result.stderr)
    assert [(e["line"], e["error"]["code"]) for e in errors] == [(2, "invalid_json"), (3, "not_an_object"),
                                                                 (4, "unknown_dialect")]
    assert all(set(e["error"]) == {"code", "message"} for e in errors)
    assert b"SECRETKEY" not in result.stdout + result.stderr


def test_ingest_normalize_says_what_it_ignores_and_dates_timeless_events_with_now() -> None:
    presence = orjson.dumps({"event": "presence.update", "instance": "i", "data": {"id": "x"}})
    timeless = orjson.dumps({"EventType": "connection", "instanceName": "u", "token": "SECRETKEY",
                             "instance": {"status": "connected"}})
    two_items = orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "w", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "P"}, "statuses": [
            {"id": "wamid.1", "status": "played", "timestamp": "1764234000", "recipient_id": "5511"},
            {"id": "wamid.2", "status": "exploded", "timestamp": "1764234000"}]}}]}]})
    stdin = b"\n".join([presence, timeless, two_items]) + b"\n"
    result = apiplus("ingest", "normalize", "--now", "2026-01-01T00:00:00Z", stdin=stdin)
    again = apiplus("ingest", "normalize", "--now", "2026-01-01T00:00:00Z", stdin=stdin)
    assert result.returncode == 0
    out = lines(result.stdout)
    assert [(e["type"], e["occurred_at"]) for e in out] == [("connection.update", "2026-01-01T00:00:00Z"),
                                                            ("message.status", "2025-11-27T09:00:00Z")]
    assert out[1]["status"]["state"] == "played"
    assert lines(result.stderr) == [
        {"line": 1, "ignored": {"reason": "presence", "detail": "presence.update"}},
        {"line": 3, "error": {"code": "invalid_value",
                              "message": "entry[0].changes[0].value.statuses[1].status 'exploded' is not a Cloud "
                                         "API status"}},
    ]
    assert result.stdout == again.stdout  # reproducible with --now
    assert b"SECRETKEY" not in result.stdout + result.stderr


def test_dispatch_render() -> None:
    good = orjson.dumps({"command_id": "c1", "channel_id": "ch", "token": "TOKENVALUE", "to": "5511999990000",
                         "message": {"kind": "text", "body": "oi"}})
    bad = orjson.dumps({"command_id": "c2", "channel_id": "ch", "token": "TOKENVALUE", "to": "5511999990000",
                        "message": {"kind": "buttons", "body": "x", "buttons": []}})
    result = apiplus("dispatch", "render", "--provider", "evolution", stdin=good + b"\n" + bad + b"\n{oops\n")
    assert result.returncode == 0
    assert lines(result.stdout) == [{"command_id": "c1", "method": "POST", "path": "/message/sendText/ch",
                                     "body": {"number": "5511999990000", "text": "oi"}}]
    errors = lines(result.stderr)
    expected = {"code": "limit_exceeded", "field": "message.buttons",
                "message": "message.buttons needs at least 1 item(s)"}
    assert errors[0] == {"line": 2, "command_id": "c2", "error": expected}
    assert errors[1]["line"] == 3
    assert "command_id" not in errors[1]
    assert b"TOKENVALUE" not in result.stdout + result.stderr


def test_billing_quote_and_replay() -> None:
    quote = apiplus("billing", "quote", "11")
    assert quote.returncode == 0
    assert orjson.loads(quote.stdout)["total_cents"] == 4000
    events = [
        {"event_id": "t", "type": "tenant.updated", "occurred_at": "2026-11-01T00:00:00Z", "tenant_id": "a",
         "plan": "premium", "invoice_due_day": 30},
        {"event_id": "a0", "type": "channel.activated", "occurred_at": "2026-11-01T00:00:00Z", "tenant_id": "a",
         "channel_id": "c0"},
        {"event_id": "a1", "type": "channel.activated", "occurred_at": "2026-11-05T00:00:00Z", "tenant_id": "a",
         "channel_id": "c1"},
    ]
    stdin = b"\n".join(orjson.dumps(e) for e in events) + b'\n{"type":"channel.activated"}\n'
    result = apiplus("billing", "replay", stdin=stdin)
    assert result.returncode == 0
    assert [e["type"] for e in lines(result.stdout)] == ["channel.charged"]
    assert lines(result.stderr)[0]["line"] == 4
