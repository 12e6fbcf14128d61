"""The project's normaliser run on quix-streams: the same work per record on another runtime.

python -m bench.quix_ingest BOOTSTRAP INPUT OUTPUT GROUP

Per raw record, exactly as ingest's normalise stage (`services.ingest.worker.normalize_record`): decode,
detect the dialect and normalise (with the dialect header and the record's timestamp as context),
validate every canonical event against its schema, encode it (quix's JSON
serializer uses orjson, as ingest does) and produce it keyed by `channel_id`, exactly-once. What
ingest does on top and this app does not: the Redis duplicate check and the health stage. A record
the core refuses stops the app with the core's error: the benchmark backlog has none, and a
benchmark must not drop records silently.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.peers import quix_app
from services.ingest.core import Context
from services.ingest.settings import IngestSettings
from services.ingest.worker import dialect_header, normalize_record

MAX_BYTES = IngestSettings.model_fields["max_payload_bytes"].default


def canonical(value: bytes, _key: Any, timestamp: int, headers: Any) -> list[dict[str, Any]]:
    """The validated canonical events of one raw record (the worker's own path, `normalize_record`)."""
    outcome = normalize_record(value, Context(dialect=dialect_header(headers), received_at_ms=timestamp), MAX_BYTES)
    refusal = outcome.refusal()
    if refusal is not None:
        raise refusal
    return list(outcome.events)


def main(bootstrap: str, source: str, sink: str, group: str) -> None:
    app = quix_app(bootstrap, group)
    raw = app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
    events = app.topic(sink, key_serializer="str", value_serializer="json")  # quix's JSON serializer is orjson
    app.dataframe(raw).apply(canonical, expand=True, metadata=True).to_topic(events, key=lambda e: e["channel_id"])
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:5])
