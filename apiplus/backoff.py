"""The one retry-delay policy: capped exponential backoff, a server's Retry-After taking precedence. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number `attempt` (1 for the first retry): `first`, doubling, at most `cap`.

    No jitter: each retrying party here (one partition's transaction, one channel's lane, one Redis
    caller) is alone in retrying its resource, so there is no herd to spread, and tests stay exact.
    """

    first: float
    cap: float

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={self.first} cap={self.cap}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `attempt`; a server's `retry_after` (seconds) wins when given."""
        if retry_after is not None:
            return max(0.0, retry_after)
        exponent = min(max(attempt, 1) - 1, 30)  # 2**30 * first is past any cap; avoids float overflow
        return float(min(self.cap, self.first * 2**exponent))
