"""The baseline: a bare aiokafka consume -> produce pass-through, same batching as the worker it is
compared with (the poll size, MAX_RECORDS, defaults to the processor's 500; billing polls 5 000).

python -m bench.baseline BOOTSTRAP INPUT OUTPUT GROUP [MAX_RECORDS]
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main(bootstrap: str, source: str, sink: str, group: str, max_records: int = 500) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=max_records)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            for records in batches.values():
                for record in records:
                    await producer.send(sink, value=record.value, key=record.key)
            if batches:
                await producer.flush()
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    bootstrap, source, sink, group = sys.argv[1:5]
    asyncio.run(main(bootstrap, source, sink, group, int(sys.argv[5]) if len(sys.argv) > 5 else 500))
