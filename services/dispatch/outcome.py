"""How a command ends: the terminal states and the error a result carries. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from apiplus.errors import ErrorCode, PermanentError


class ResultState(StrEnum):
    """`dispatch.result` states: two progress reports, then one terminal state per command."""

    QUEUED = "queued"
    HELD = "held"
    SENT = "sent"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in (ResultState.QUEUED, ResultState.HELD)


@dataclass(frozen=True)
class Failure:
    """The `error` of a result: a code from the closed set, the field if one is to blame, a message."""

    code: ErrorCode
    message: str
    field: str | None = None
    provider_status: int | None = None

    @classmethod
    def of(cls, error: PermanentError, provider_status: int | None = None) -> Failure:
        return cls(error.code, error.message, error.field, provider_status)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": str(self.code), "field": self.field, "message": self.message}
        if self.provider_status is not None:
            out["provider_status"] = self.provider_status
        return out


QUEUE_FULL = Failure(ErrorCode.QUEUE_FULL, "the channel's queue is full")
DELIVERY_UNKNOWN = Failure(ErrorCode.DELIVERY_UNKNOWN,
                           "an earlier attempt may have reached the provider; not sent again")
