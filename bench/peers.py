"""Peers of the aiokafka baseline: the same pass-through on the libraries a user would pick instead.

python -m bench.peers quix|confluent BOOTSTRAP INPUT OUTPUT GROUP

- quix: a quix-streams 3 application with `processing_guarantee="exactly-once"` (one Kafka transaction
  per checkpoint: every 500 records, as the workers' batches, or every second);
- confluent: plain confluent-kafka (librdkafka), the baseline's loop: consume up to 500 records,
  produce them with an idempotent producer (acks=all, linger 5 ms), flush, commit.

Both are in the `bench` extra (`make bench` installs it); nothing outside bench/ imports them.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

# A quix checkpoint (in exactly-once mode, a transaction) after every 500 records or 1 s, whichever
# comes first: the workers commit one transaction per fetched batch of up to 500 records. quix's default
# (every 5 s) would also make outputs visible to a read_committed reader only in 5-second steps, too
# coarse to time a run of a few seconds.
QUIX_COMMIT_EVERY = 500
QUIX_COMMIT_INTERVAL = 1.0


def quix_app(bootstrap: str, group: str) -> Any:
    from quixstreams import Application

    return Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                       processing_guarantee="exactly-once", commit_interval=QUIX_COMMIT_INTERVAL,
                       commit_every=QUIX_COMMIT_EVERY,
                       auto_create_topics=False, use_changelog_topics=False, loglevel="WARNING",
                       producer_extra_config={"linger.ms": 5})


def quix_passthrough(bootstrap: str, source: str, sink: str, group: str) -> None:
    app = quix_app(bootstrap, group)
    raw = {"key_deserializer": "bytes", "value_deserializer": "bytes", "key_serializer": "bytes",
           "value_serializer": "bytes"}
    app.dataframe(app.topic(source, **raw)).to_topic(app.topic(sink, **raw))
    app.run()  # stops cleanly on SIGTERM


def confluent_passthrough(bootstrap: str, source: str, sink: str, group: str) -> None:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([source])
    try:
        while not stopping:
            records = consumer.consume(num_messages=500, timeout=0.2)
            for record in records:
                if record.error():
                    raise RuntimeError(str(record.error()))
                while True:
                    try:
                        producer.produce(sink, value=record.value(), key=record.key())
                        break
                    except BufferError:  # the local queue is full: let deliveries drain
                        producer.poll(0.05)
                producer.poll(0)
            if records:
                if producer.flush(30):
                    raise RuntimeError("records still undelivered after 30 s")
                consumer.commit(asynchronous=False)
    finally:
        producer.flush(30)
        consumer.close()


PEERS = {"quix": quix_passthrough, "confluent": confluent_passthrough}

# What `make bench` runs beside the aiokafka baseline, on the same backlog: result name -> module and
# arguments (each module then takes BOOTSTRAP INPUT OUTPUT GROUP).
COMMANDS: dict[str, list[str]] = {
    "quix_eos": ["bench.peers", "quix"],
    "confluent": ["bench.peers", "confluent"],
    "quix_ingest": ["bench.quix_ingest"],
    "aiokafka_eos": ["bench.eos_clients", "aiokafka"],
    "confluent_aio_eos": ["bench.eos_clients", "confluent-aio"],
    "confluent_sync_eos": ["bench.eos_clients", "confluent-sync"],
}

if __name__ == "__main__":
    PEERS[sys.argv[1]](*sys.argv[2:6])
