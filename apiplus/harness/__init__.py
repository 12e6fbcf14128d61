"""In-memory Kafka and a manual clock, to unit-test the loops in milliseconds without Kafka or Redis.

    h = Harness()                                   # h.clock, h.broker, h.kafka
    h.broker.create_topic("in", partitions=2)
    h.broker.produce("in", b'{"n": 1}', key=b"k")   # an upstream record, outside any transaction
    p = TransactionalProcessor(config, h.kafka, handler, metrics, clock=h.clock)
    await p.start(); await p.step()                 # one poll; rebalances apply at the poll, as in aiokafka
    h.broker.records("out")                         # what a read_committed reader sees
    h.broker.committed("group", TopicPartition("in", 0))

`ManualClock(start=DEFAULT_EPOCH)` — an `apiplus.clock.Clock` whose time moves only when told:
- `time()` (epoch seconds, `start + elapsed`), `monotonic()` (`elapsed`);
- `await sleep(seconds)`, `await wait(event, seconds) -> bool` park the caller on a timer;
- `await advance(seconds)`: fire due timers in deadline order, letting woken tasks run after each;
- `await run(awaitable, limit=...)`: await it, jumping to the next timer whenever it is idle (so a
  retry loop with backoff finishes at once, and `clock.monotonic()` tells how long it waited);
  raises `ClockStuck` if it waits on something no timer releases;
- `await settle()`: let every runnable task run; `next_deadline`: the earliest timer, or None.

`FakeBroker(clock)`: `create_topic(name, partitions)`, `produce(topic, value, key=, partition=,
headers=) -> offset`, `records(topic, committed=True)` (read_committed view; False: everything
written, aborted included), `committed(group, tp)`, `high_watermark(tp)`, `last_stable_offset(tp)`,
`fail_next(op, error=None, times=1)` with op in send | begin | send_offsets | commit | init | fetch |
commit_offsets | committed (default error: `KafkaConnectionError`, which the loops retry; `Killed()`: the process
dies there as with kill -9, its producer's transaction left open; `SenderDied()` at commit: the producer
is unusable from then on, as aiokafka's is once its sender task died), `expel(consumer)` (a session timeout: the
member keeps fetching, unaware — a zombie), `partitions(topic)`, `epochs`, `groups`.

`FakeKafka(broker)` is the `apiplus.kafka.ClientFactory`: `group_consumer(group_id, max_poll_records=)`,
`reader()`, `producer()`, `transactional_producer(id)`, `partitions_for(topic)`; it keeps every
client it made in `.consumers` / `.producers`.
`FakeConsumer`: aiokafka's `subscribe(topics|pattern, listener)`, `getmany`, `assign`,
`seek_to_beginning`, `end_offsets`, `position`, `highwater`, `last_stable_offset`, `commit(offsets)`
(raises `CommitFailedError` for partitions it no longer owns), `pause`/`resume`/`paused`,
`assignment`; a poll with nothing to return yields once and returns `{}` (it never waits for data).
`FakeProducer`: `send` (returns an acknowledged future of `Delivery(topic, partition, offset)`),
`transaction()`, `begin/commit/abort_transaction`, `send_offsets_to_transaction`, `stop`, and
`crash()` (kill -9: an open transaction stays open until the next producer with the same id starts,
which aborts it and fences this one: its next call raises `ProducerFenced`).
"""

from __future__ import annotations

from apiplus.harness.broker import FakeBroker
from apiplus.harness.clients import Delivery, FakeConsumer, FakeKafka, FakeProducer, Killed, ReplyLost, SenderDied
from apiplus.harness.clock import DEFAULT_EPOCH, ClockStuck, ManualClock

__all__ = [
    "DEFAULT_EPOCH",
    "ClockStuck",
    "Delivery",
    "FakeBroker",
    "FakeConsumer",
    "FakeKafka",
    "FakeProducer",
    "Harness",
    "Killed",
    "ManualClock",
    "ReplyLost",
    "SenderDied",
]


class Harness:
    """A manual clock, a broker on it, and the client factory over the broker."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self.clock = ManualClock(start)
        self.broker = FakeBroker(self.clock)
        self.kafka = FakeKafka(self.broker)
