"""The shared library: offsets, redaction, settings, DLQ records, envelope."""

from __future__ import annotations

import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiplus.dlq import dead_letter
from apiplus.envelope import ID_NAMESPACE, deterministic_id, parse_rfc3339, rfc3339_from_epoch
from apiplus.errors import ErrorCode, PermanentError
from apiplus.offsets import OffsetTracker
from apiplus.redact import mask_phone, safe_log_fields, strip_secrets, strip_secrets_bytes
from apiplus.settings import SettingsError, WorkerSettings, load_settings


def test_offsets_commit_only_below_the_oldest_unfinished() -> None:
    t = OffsetTracker()
    assert t.committable() is None
    for o in (10, 11, 12, 13):
        t.add(o)
    t.done(12)
    t.done(13)
    assert t.committable() == 10
    t.done(10)
    assert t.committable() == 11
    t.done(11)
    assert t.committable() == 14
    assert t.in_flight == 0


def test_secrets_are_stripped_at_any_depth() -> None:
    payload = {"apikey": "SEC-1", "data": {"token": "SEC-2", "list": [{"Authorization": "Bearer SEC-3"}]}, "text": "ok"}
    clean = strip_secrets(payload)
    assert "SEC-" not in orjson.dumps(clean).decode()
    assert clean["text"] == "ok"
    assert clean["data"]["list"][0]["Authorization"] == "[redacted]"
    raw = b'{"apikey": "abc\\"def", "broken": '
    assert b"abc" not in strip_secrets_bytes(raw)


def test_log_fields_mask_phones_and_drop_tokens() -> None:
    fields = safe_log_fields({"token": "x", "to": "5511999990000", "topic": "t"})
    assert fields == {"to": "*********0000", "topic": "t"}
    assert mask_phone("123") == "***"


def test_dlq_record_has_source_reason_and_no_secrets() -> None:
    error = PermanentError(ErrorCode.MISSING_FIELD, "instance is required", field="instance")
    record = dead_letter(producer="p", topic="t", partition=1, offset=7, raw=b'{"token":"SECRET","a":1}', error=error,
                         now=0)
    assert record["source"] == {"topic": "t", "partition": 1, "offset": 7}
    assert record["error"] == {"code": "missing_field", "field": "instance", "message": "instance is required"}
    assert "SECRET" not in orjson.dumps(record).decode()
    binary = dead_letter(producer="p", topic="t", partition=0, offset=0, raw=b"\xff\xfe", error=error, now=0)
    assert "payload_base64" in binary


def test_missing_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIPLUS_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("APIPLUS_REDIS_URL", "redis://x")
    with pytest.raises(SettingsError, match="missing required setting APIPLUS_KAFKA_BOOTSTRAP"):
        load_settings(WorkerSettings)


def test_settings_keep_passwords_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIPLUS_KAFKA_BOOTSTRAP", "k:9092")
    monkeypatch.setenv("APIPLUS_REDIS_URL", "redis://:hunter2@x")
    monkeypatch.setenv("APIPLUS_KAFKA_SASL_PASSWORD", "hunter3")
    settings = load_settings(WorkerSettings)
    assert "hunter2" not in repr(settings)
    assert "hunter3" not in repr(settings)


@given(st.lists(st.one_of(st.none(), st.text(), st.integers()), max_size=4))
def test_deterministic_id_is_exactly_uuid5(parts: list[object]) -> None:
    text = "\x1f".join("\x00" if p is None else str(p) for p in parts)
    assert deterministic_id(*parts) == str(uuid.uuid5(ID_NAMESPACE, text))


def test_ids_and_timestamps() -> None:
    assert deterministic_id("a", 1) == deterministic_id("a", 1) != deterministic_id("a", 2)
    assert deterministic_id(None) != deterministic_id("")
    assert rfc3339_from_epoch(0) == "1970-01-01T00:00:00Z"
    assert rfc3339_from_epoch(1.5) == "1970-01-01T00:00:01.500Z"
    with pytest.raises(ValueError, match="time zone"):
        parse_rfc3339("2026-01-01T00:00:00")
