"""Everything dispatch writes, committed exactly once: one outbox and one transaction per input partition.

Results (`queued`, `held`, terminal), dead letters and parked commands wait in their input
partition's outbox; a flush writes them in one Kafka transaction with the partition's progress
(progress.py) and its committed offset (the first unfinished command). A crash before the commit
aborts all of it and the next owner redoes exactly those commands; after it, the next owner skips
what is finished. The transactional id follows the partition, so a new owner's `init_transactions`
fences a zombie and aborts its open transaction (aiokafka has no KIP-447 group fencing).
After each commit, `after` callbacks run (the send record's DONE): they only save work on
redelivery, the transaction is what counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError, ProducerFenced

from apiplus.kafka import ClientFactory, Output, TransactionalProducer, load_table, send_outputs
from apiplus.metrics import ProcessorMetrics
from services.dispatch.commits import Commits
from services.dispatch.progress import Mark, Progress

log = logging.getLogger("apiplus.dispatch")
RENEW_TIMEOUT_SECONDS = 30.0
After = Callable[[], Awaitable[None]]


@dataclass
class Pending:
    outputs: list[Output] = field(default_factory=list)
    marks: list[tuple[int, Mark]] = field(default_factory=list)
    after: list[After] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outputs or self.marks)

    def add(self, other: Pending) -> None:
        self.outputs += other.outputs
        self.marks += other.marks
        self.after += other.after


@dataclass
class Box:
    producer: TransactionalProducer
    committed: Progress
    pending: Pending = field(default_factory=Pending)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one transaction at a time
    stale: bool = False  # the producer's renewal failed (broker away): renew before the next transaction
    # A failed transaction whose outcome the failed renewal could not tell (its outputs and the progress it
    # would have committed): settled by the next renewal's progress, before anything else is written.
    in_doubt: tuple[Pending, Progress] | None = None

    def take(self) -> Pending:
        taken, self.pending = self.pending, Pending()
        return taken

    def restore(self, taken: Pending) -> None:
        """An aborted flush: its outputs go first in the next one."""
        taken.add(self.pending)
        self.pending = taken


class Outboxes:
    def __init__(self, clients: ClientFactory, *, app: str, group_id: str, progress_topic: str, commits: Commits,
                 metrics: ProcessorMetrics) -> None:
        self.clients = clients
        self.app = app
        self.group_id = group_id
        self.progress_topic = progress_topic
        self.commits = commits
        self.metrics = metrics
        self.boxes: dict[Any, Box] = {}
        self._progress_partitions: list[int] = []

    # --- partitions -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Before joining the group: the progress topic must exist (fail at start, not in a rebalance)."""
        self._progress_partitions = await self.clients.partitions_for(self.progress_topic)
        if not self._progress_partitions:
            raise RuntimeError(f"topic {self.progress_topic} does not exist")

    async def assign(self, tps: Iterable[Any]) -> None:
        """A transactional producer per partition (fencing the previous owner), then its progress."""
        new = [tp for tp in tps if tp not in self.boxes]
        producers = {tp: self.clients.transactional_producer(f"{self.app}.{tp.topic}.{tp.partition}") for tp in new}
        await asyncio.gather(*(producer.start() for producer in producers.values()))  # fence first, then read
        partitions = sorted({self._progress_partition(tp) for tp in new})
        progress: dict[str, Progress] = {}
        for table in await asyncio.gather(*(load_table(self.clients, self.progress_topic, p, Progress.decode)
                                             for p in partitions)):
            progress.update(table)
        for tp in new:
            self.boxes[tp] = Box(producers[tp], progress.get(self._key(tp)) or Progress())

    async def release(self, tps: Iterable[Any]) -> None:
        """Commit what is finished on these partitions, then let them go."""
        for tp in [tp for tp in tps if tp in self.boxes]:
            box = self.boxes[tp]
            async with box.lock:  # after a flush in progress
                if self._due(tp):
                    await self._transaction(tp, box)
                self.boxes.pop(tp, None)
                with contextlib.suppress(KafkaError, OSError):
                    await box.producer.stop()

    async def _renew(self, tp: Any, box: Box) -> Progress | None:
        """After a failed transaction: a new producer (aiokafka's can be unusable for good once its sender
        task died, e.g. on a connection dropped while the broker went down), whose init_transactions
        completes or aborts the transaction left in doubt; then the partition's progress as committed.
        None when that cannot be known now (the broker still away): the next flush fails and renews again."""
        with contextlib.suppress(KafkaError, OSError):
            await box.producer.stop()
        producer = self.clients.transactional_producer(f"{self.app}.{tp.topic}.{tp.partition}")
        box.producer = producer
        try:
            # Bounded, so that a stop during a broker outage is not held up (TimeoutError is an OSError).
            await asyncio.wait_for(producer.start(), RENEW_TIMEOUT_SECONDS)
            table = await asyncio.wait_for(
                load_table(self.clients, self.progress_topic, self._progress_partition(tp), Progress.decode),
                RENEW_TIMEOUT_SECONDS)
        except ProducerFenced:
            self.boxes.pop(tp, None)
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            return None
        except (KafkaError, OSError) as exc:
            box.stale = True
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            log.warning("producer renewal failed; retried at the next flush",
                        extra={"topic": tp.topic, "partition": tp.partition, "error": type(exc).__name__})
            return None
        box.stale = False
        return table.get(self._key(tp))

    def _key(self, tp: Any) -> str:
        return f"{tp.topic}:{tp.partition}"

    def _progress_partition(self, tp: Any) -> int:
        partition: int = tp.partition
        return self._progress_partitions[partition % len(self._progress_partitions)]

    def waiting(self) -> int:
        """Outputs waiting for their partition's next transaction, a flush in doubt's included (intake's
        backpressure counts them)."""
        return sum(len(box.pending.outputs) + (len(box.in_doubt[0].outputs) if box.in_doubt else 0)
                   for box in self.boxes.values())

    # --- what the parts hand in -----------------------------------------------------------------
    def mark(self, tp: Any, offset: int) -> Mark:
        box = self.boxes.get(tp)
        return box.committed.get(offset) if box is not None else Mark.NONE

    def add(self, tp: Any, offset: int, outputs: Sequence[Output], mark: Mark, after: After | None = None) -> bool:
        """Queue outputs of the command at `offset` for the next flush; False if the partition is gone."""
        box = self.boxes.get(tp)
        if box is None:
            return False
        box.pending.outputs += outputs
        box.pending.marks.append((offset, mark))
        if after is not None:
            box.pending.after.append(after)
        return True

    # --- the transaction ------------------------------------------------------------------------
    async def flush(self, tps: Iterable[Any] | None = None) -> None:
        """One transaction per partition with something to commit, concurrently."""
        due = [tp for tp in (tps if tps is not None else list(self.boxes)) if self._due(tp)]
        await asyncio.gather(*(self._flush(tp) for tp in due))

    def _due(self, tp: Any) -> bool:
        box = self.boxes.get(tp)
        return box is not None and (bool(box.pending) or self.commits.position(tp) != box.committed.frontier)

    async def _flush(self, tp: Any) -> None:
        box = self.boxes.get(tp)
        if box is None:
            return
        async with box.lock:
            if self.boxes.get(tp) is box and self._due(tp):
                await self._transaction(tp, box)

    async def _transaction(self, tp: Any, box: Box) -> None:
        if box.stale:
            renewed = await self._renew(tp, box)
            if box.stale or self.boxes.get(tp) is not box:
                return  # still away (or fenced): the outbox waits for the next flush
            if box.in_doubt is not None:
                await self._settle(box, renewed)
        frontier = self.commits.position(tp)  # with `take`, one synchronous snapshot
        taken = box.take()
        progress = box.committed.with_marks(taken.marks, frontier)
        started = asyncio.get_running_loop().time()
        try:
            async with box.producer.transaction():
                await send_outputs(box.producer, [*taken.outputs, self._progress_output(tp, progress)])
                if frontier is not None:
                    await box.producer.send_offsets_to_transaction({tp: frontier}, self.group_id)
        except ProducerFenced:
            log.warning("producer fenced; partition moved", extra={"topic": tp.topic, "partition": tp.partition})
            self.boxes.pop(tp, None)
            with contextlib.suppress(KafkaError, OSError):
                await box.producer.stop()  # or it lingers, unclosed, until the process ends
            return
        except (KafkaError, OSError) as exc:
            self.metrics.transaction_aborts.inc()
            log.warning("transaction aborted; retried at the next flush",
                        extra={"topic": tp.topic, "partition": tp.partition, "error": type(exc).__name__})
            renewed = await self._renew(tp, box)
            if renewed != progress:
                if box.stale:  # the broker still away: whether it committed is known at the next renewal
                    box.in_doubt = (taken, progress)
                else:
                    box.restore(taken)
                return
            # The transaction had committed after all (only its reply was lost): nothing to redo.
        except BaseException:  # cancelled mid-transaction: it aborts; a result doubled beats one lost
            box.restore(taken)
            raise
        self.metrics.batch_duration.observe(asyncio.get_running_loop().time() - started)
        await self._committed(box, taken, progress)

    async def _settle(self, box: Box, renewed: Progress | None) -> None:
        """The transaction in doubt committed if the progress read back is the one it carried (only its reply
        was lost): it is done, not written again. Otherwise it aborted: its outputs go first in the next."""
        assert box.in_doubt is not None
        (taken, progress), box.in_doubt = box.in_doubt, None
        if renewed != progress:
            box.restore(taken)
            return
        await self._committed(box, taken, progress)

    @staticmethod
    async def _committed(box: Box, taken: Pending, progress: Progress) -> None:
        box.committed = progress
        await asyncio.gather(*(after() for after in taken.after))

    def _progress_output(self, tp: Any, progress: Progress) -> Output:
        return Output(self.progress_topic, progress.encode(), key=self._key(tp).encode(),
                      partition=self._progress_partition(tp))
