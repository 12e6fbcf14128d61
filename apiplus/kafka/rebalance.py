"""The one bridge from aiokafka's rebalance callbacks to whatever owns partitions in a worker."""

from __future__ import annotations

from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener


class PartitionOwner(Protocol):
    """Takes partitions on and gives them up; each method does its own locking."""

    async def partitions_assigned(self, partitions: list[Any]) -> None:
        """New partitions, sorted; called before the first records of them are fetched."""

    async def partitions_revoked(self, partitions: list[Any]) -> None:
        """Finish or drop work on these partitions (and commit what is done) before returning."""


class RebalanceAdapter(ConsumerRebalanceListener):  # type: ignore[misc]
    """Pass as `listener=` to `subscribe`: forwards aiokafka's callbacks to a `PartitionOwner`."""

    def __init__(self, owner: PartitionOwner) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.partitions_revoked(sorted(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner.partitions_assigned(sorted(assigned))
