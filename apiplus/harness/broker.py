"""The in-memory broker of the harness: partition logs, transactions, committed group offsets, groups.

Semantics kept from Kafka because the loops depend on them:
- a transaction's records sit in the log from the first send; `read_committed` readers see nothing at
  or beyond the first offset of a still-open transaction (the last stable offset), never see aborted
  records, and commit/abort each write a control marker that takes an offset and is never returned;
- offsets sent to a transaction become the group's committed offsets only when it commits;
- `init_transactions` (a producer's `start`) bumps the transactional id's epoch, aborts the previous
  epoch's open transaction and fences the previous producer: its next operation raises `ProducerFenced`;
- a group hands partitions out round-robin over its members in join order, eagerly (every member is
  revoked everything, then assigned its share), at each member's next poll.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord, TopicPartition

from apiplus.clock import Clock

if TYPE_CHECKING:
    from apiplus.harness.clients import FakeConsumer


@dataclass
class Transaction:
    transactional_id: str
    epoch: int
    state: str = "open"  # open | committed | aborted
    partitions: set[TopicPartition] = field(default_factory=set)
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)


@dataclass
class Entry:
    record: ConsumerRecord[bytes, bytes]
    txn: Transaction | None = None
    control: bool = False

    def visible(self, read_committed: bool) -> bool:
        if self.control:
            return False
        return not read_committed or self.txn is None or self.txn.state == "committed"


@dataclass
class Group:
    members: list[FakeConsumer] = field(default_factory=list)
    generation: int = 0


class FakeBroker:
    """Topics must be created (`create_topic`) before use, as on a broker without auto-creation."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.logs: dict[TopicPartition, list[Entry]] = {}
        self.group_offsets: dict[tuple[str, TopicPartition], int] = {}
        self.groups: dict[str, Group] = {}
        self.epochs: dict[str, int] = {}
        self.open_txns: dict[str, Transaction] = {}
        self._faults: list[tuple[str, BaseException]] = []
        self._round_robin = 0

    # --- topics and records ----------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1) -> None:
        for p in range(partitions):
            self.logs.setdefault(TopicPartition(name, p), [])

    def partitions(self, topic: str) -> list[int]:
        return sorted(tp.partition for tp in self.logs if tp.topic == topic)

    def topics(self) -> set[str]:
        return {tp.topic for tp in self.logs}

    def choose_partition(self, topic: str, key: bytes | None, partition: int | None) -> TopicPartition:
        parts = self.partitions(topic)
        if not parts:
            raise UnknownTopicOrPartitionError(f"topic {topic} does not exist")
        if partition is None:
            self._round_robin += 1
            partition = parts[(zlib.crc32(key) if key is not None else self._round_robin) % len(parts)]
        tp = TopicPartition(topic, partition)
        if tp not in self.logs:
            raise UnknownTopicOrPartitionError(f"{topic}/{partition} does not exist")
        return tp

    def append(self, tp: TopicPartition, key: bytes | None, value: bytes | None,
               headers: Sequence[tuple[str, bytes]] = (), txn: Transaction | None = None,
               control: bool = False, timestamp_ms: int | None = None) -> int:
        log = self.logs[tp]
        offset = len(log)
        timestamp = timestamp_ms if timestamp_ms is not None else int(self.clock.time() * 1000)
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic=tp.topic, partition=tp.partition, offset=offset, timestamp=timestamp, timestamp_type=0,
            key=key, value=value, checksum=None, serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""), headers=tuple(headers),
        )
        log.append(Entry(record, txn, control))
        if txn is not None:
            txn.partitions.add(tp)
        return offset

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None,
                headers: Sequence[tuple[str, bytes]] = ()) -> int:
        """Write one record outside any transaction (a test's upstream publisher); returns its offset."""
        return self.append(self.choose_partition(topic, key, partition), key, value, headers)

    def records(self, topic: str, *, committed: bool = True) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of the topic a reader would see (`committed=False`: read_uncommitted), by partition."""
        out = []
        for tp in sorted(tp for tp in self.logs if tp.topic == topic):
            end = self.last_stable_offset(tp) if committed else self.high_watermark(tp)
            out += [e.record for e in self.logs[tp][:end] if e.visible(committed)]
        return out

    def high_watermark(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    def last_stable_offset(self, tp: TopicPartition) -> int:
        for entry in self.logs[tp]:
            if entry.txn is not None and entry.txn.state == "open":
                return int(entry.record.offset)
        return len(self.logs[tp])

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        return self.group_offsets.get((group_id, tp))

    # --- faults ----------------------------------------------------------------------------
    def fail_next(self, operation: str, error: BaseException | None = None, times: int = 1) -> None:
        """The next `times` calls of `operation` (send | begin | send_offsets | commit | init | fetch |
        commit_offsets) raise `error` (default: a connection error, which the loops retry)."""
        for _ in range(times):
            self._faults.append((operation, error or KafkaConnectionError(f"injected {operation} failure")))

    def check_fault(self, operation: str) -> None:
        for i, (op, error) in enumerate(self._faults):
            if op == operation:
                del self._faults[i]
                raise error

    # --- transactions ----------------------------------------------------------------------
    def init_transactions(self, transactional_id: str) -> int:
        self.check_fault("init")
        previous = self.open_txns.pop(transactional_id, None)
        if previous is not None:
            self.end_transaction(previous, commit=False)
        self.epochs[transactional_id] = self.epochs.get(transactional_id, -1) + 1
        return self.epochs[transactional_id]

    def end_transaction(self, txn: Transaction, *, commit: bool) -> None:
        txn.state = "committed" if commit else "aborted"
        for tp in sorted(txn.partitions):
            self.append(tp, None, None, txn=txn, control=True)
        if commit:
            self.group_offsets.update(txn.offsets)
        if self.open_txns.get(txn.transactional_id) is txn:
            del self.open_txns[txn.transactional_id]

    # --- groups ----------------------------------------------------------------------------
    def join(self, group_id: str, member: FakeConsumer) -> None:
        group = self.groups.setdefault(group_id, Group())
        if member not in group.members:
            group.members.append(member)
        self.rebalance(group_id)

    def leave(self, group_id: str, member: FakeConsumer) -> None:
        group = self.groups.get(group_id)
        if group is not None and member in group.members:
            group.members.remove(member)
            self.rebalance(group_id)

    def expel(self, member: FakeConsumer) -> None:
        """As a session timeout: the member is dropped without being told and keeps fetching what it
        had (a zombie); the others get its partitions at their next poll."""
        if member.group_id is not None:
            self.leave(member.group_id, member)

    def rebalance(self, group_id: str) -> None:
        group = self.groups[group_id]
        group.generation += 1
        shares: dict[int, list[TopicPartition]] = {i: [] for i in range(len(group.members))}
        wanted = sorted({tp for m in group.members for tp in self.logs if m.wants(tp.topic)})
        for i, tp in enumerate(wanted):
            shares[i % len(group.members)].append(tp)
        for i, member in enumerate(group.members):
            member.pending_assignment = (group.generation, shares[i])

    def owns(self, group_id: str, member: Any, tp: TopicPartition) -> bool:
        group = self.groups.get(group_id)
        return group is not None and member in group.members and tp in member.assignment()
