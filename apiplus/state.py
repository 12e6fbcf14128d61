"""A partition's table for the transactional processor: committed values plus the batch in progress."""

from __future__ import annotations

from typing import Any


class PartitionState:
    """Reads see the batch's own changes; `commit` keeps them, `rollback` (an aborted transaction) drops them."""

    _DELETED = object()

    def __init__(self, partition: int, committed: dict[str, Any] | None = None) -> None:
        self.partition = partition
        self._committed: dict[str, Any] = committed or {}
        self._pending: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self._pending.get(key, self._committed.get(key, default))
        return default if value is self._DELETED else value

    def put(self, key: str, value: Any) -> None:
        self._pending[key] = value

    def delete(self, key: str) -> None:
        self._pending[key] = self._DELETED

    def keys(self) -> set[str]:
        live = set(self._committed) | set(self._pending)
        return {k for k in live if self._pending.get(k) is not self._DELETED}

    def pending(self) -> dict[str, Any | None]:
        """The batch's changes; None marks a deletion (a tombstone in the changelog)."""
        return {k: (None if v is self._DELETED else v) for k, v in self._pending.items()}

    def commit(self) -> None:
        for key, value in self._pending.items():
            if value is self._DELETED:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value
        self._pending.clear()

    def rollback(self) -> None:
        self._pending.clear()
