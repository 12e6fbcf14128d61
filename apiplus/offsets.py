"""Out-of-order completion, in-order commits: the committable offset is the first record not yet done."""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Offsets of one partition, added in order and finished in any order."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None  # one past the highest offset added

    def add(self, offset: int) -> None:
        self._pending.append(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(self._pending.popleft())

    def committable(self) -> int | None:
        """Everything below this offset is finished; None before any record was added."""
        if self._pending:
            return self._pending[0]
        return self._next

    @property
    def in_flight(self) -> int:
        return len(self._pending)
