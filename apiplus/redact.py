"""Keeps secrets and phone numbers out of outputs, DLQ records and logs. Pure."""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are credentials in any gateway payload or command we handle.
SECRET_KEYS = frozenset(
    {
        "apikey",
        "api_key",
        "token",
        "admintoken",
        "access_token",
        "authorization",
        "password",
        "secret",
        "sasl_password",
    }
)
REDACTED = "[redacted]"
_SECRET_IN_TEXT = re.compile(
    rb'("(?:' + b"|".join(re.escape(k.encode()) for k in sorted(SECRET_KEYS)) + rb')"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)
_PHONE_KEYS = frozenset({"to", "from", "phone", "number", "recipient", "sender_pn", "remotejid", "chatid"})


def is_secret_key(key: str) -> bool:
    return key.lower() in SECRET_KEYS


def strip_secrets(value: Any) -> Any:
    """A copy of a parsed JSON value with every secret-keyed value replaced, at any depth."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) else strip_secrets(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    return value


def strip_secrets_bytes(raw: bytes) -> bytes:
    """For raw bytes that may not parse: blank the value of every `"secret-key": "..."` pair."""
    return _SECRET_IN_TEXT.sub(rb'\1"' + REDACTED.encode() + rb'"', raw)


def mask_phone(value: str) -> str:
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


def safe_log_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Log context with secrets removed and phone numbers masked."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        lowered = key.lower()
        if lowered in SECRET_KEYS:
            continue
        if lowered in _PHONE_KEYS and isinstance(value, str):
            out[key] = mask_phone(value)
        else:
            out[key] = value
    return out
