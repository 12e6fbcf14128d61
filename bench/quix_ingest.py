"""The project's normaliser run on quix-streams: the same work per record on another runtime.

python -m bench.quix_ingest BOOTSTRAP INPUT OUTPUT GROUP

Per raw record, exactly as ingest's normalise stage: decode (`apiplus.decode.parse_object`), detect
the dialect and normalise (`services.ingest.core.normalize`, with the dialect header and the record's
timestamp as context), validate every canonical event against its schema, encode it (quix's JSON
serializer uses orjson, as ingest does) and produce it keyed by `channel_id`, exactly-once. What
ingest does on top and this app does not: the Redis duplicate check and the health stage. A record
the core refuses stops the app with the core's error: the benchmark backlog has none, and a
benchmark must not drop records silently.
"""

from __future__ import annotations

import sys
from typing import Any

from apiplus.decode import parse_object
from apiplus.schemas import validate
from bench.peers import quix_app
from services.ingest.core import Context, normalize
from services.ingest.worker import dialect_header


def canonical(value: bytes, _key: Any, timestamp: int, headers: Any) -> list[dict[str, Any]]:
    """The validated canonical events of one raw record."""
    events = normalize(parse_object(value), Context(dialect=dialect_header(headers), received_at_ms=timestamp))
    for event in events:
        validate(event["type"], event)
    return events


def main(bootstrap: str, source: str, sink: str, group: str) -> None:
    app = quix_app(bootstrap, group)
    raw = app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
    events = app.topic(sink, key_serializer="str", value_serializer="json")  # quix's JSON serializer is orjson
    app.dataframe(raw).apply(canonical, expand=True, metadata=True).to_topic(events, key=lambda e: e["channel_id"])
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:5])
