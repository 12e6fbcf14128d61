"""The one error hierarchy. Permanent errors dead-letter the record; transient ones are retried."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Closed set of reasons a record is refused; DLQ records and result events carry one."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_ENCODING = "invalid_encoding"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_DIALECT = "unknown_dialect"
    UNKNOWN_EVENT = "unknown_event"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    SCHEMA_VIOLATION = "schema_violation"
    LIMIT_EXCEEDED = "limit_exceeded"
    UNAUTHORIZED = "unauthorized"
    CHANNEL_INACTIVE = "channel_inactive"
    PLUS_REQUIRED = "plus_required"
    UNSUPPORTED = "unsupported"
    RETRIES_EXHAUSTED = "retries_exhausted"
    # dispatch's terminal results: the send failed or the command expired.
    QUEUE_FULL = "queue_full"
    DELIVERY_UNKNOWN = "delivery_unknown"
    PROVIDER_REJECTED = "provider_rejected"
    NOT_AFTER_PASSED = "not_after_passed"
    HELD_TOO_LONG = "held_too_long"
    INTERNAL = "internal_error"


class ApiplusError(Exception):
    """Root of every error the workers raise on purpose."""


class PermanentError(ApiplusError):
    """Bad input or a broken rule: retrying cannot help. The record goes to the DLQ with its reason."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str | None]:
        return {"code": str(self.code), "field": self.field, "message": self.message}


class TransientError(ApiplusError):
    """A dependency failed (broker, Redis, provider): retry with backoff; the record is not lost."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
