"""Turning raw record bytes into a JSON object, with a specific error for each way it can fail. Pure."""

from __future__ import annotations

from typing import Any

import orjson

from apiplus.errors import ErrorCode, PermanentError

DEFAULT_MAX_BYTES = 1024 * 1024


def parse_object(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    if raw is None:
        raise PermanentError(ErrorCode.INVALID_JSON, "record has no value (tombstone)")
    if len(raw) > max_bytes:
        raise PermanentError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"payload is {len(raw)} bytes; the limit is {max_bytes}"
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(ErrorCode.INVALID_ENCODING, "payload is not valid UTF-8") from None
        raise PermanentError(ErrorCode.INVALID_JSON, f"payload is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise PermanentError(ErrorCode.NOT_AN_OBJECT, f"payload is a JSON {type(value).__name__}, not an object")
    return value
