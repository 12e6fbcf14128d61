"""The real-traffic corpus through the real broker: delivered three times, each event comes out once."""

from __future__ import annotations

import collections
from pathlib import Path

import orjson

from apiplus.errors import PermanentError
from services.ingest.core import Context
from services.ingest.settings import IngestSettings
from services.ingest.worker import normalize_record
from tests.integration.ingesttools import ingest_topics, running_ingest
from tests.integration.kafkatools import bootstrap, caught_up, produce, read_to_end, redis_url, unique

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "real"
DELIVERIES = 3


def _corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob("*/*.json")) if not p.name.endswith(".expected.json")]


def _expected_ids(raws: list[bytes]) -> tuple[set[str], int]:
    """Event ids the corpus yields (the same ids whatever the record time) and how many records refuse all."""
    ids: set[str] = set()
    refused = 0
    for raw in raws:
        try:
            outcome = normalize_record(raw, Context(received_at_ms=1_700_000_000_000), 512 * 1024)
        except PermanentError:
            refused += 1
            continue
        ids.update(e["event_id"] for e in outcome.events)
        if outcome.errors:
            refused += 1  # dead-lettered, whole or next to its good items
    return ids, refused


async def test_corpus_delivered_three_times_comes_out_once_each() -> None:
    topics = await ingest_topics()
    settings = IngestSettings(kafka_bootstrap=bootstrap(), redis_url=redis_url(), http_port=0,
                              group_id=unique("ingest"), health_group_id=unique("ingest-health"),
                              subscribe_evolution=False, tick_seconds=1, **topics)
    raws = _corpus()
    expected, refused = _expected_ids(raws)
    assert len(raws) >= 80
    async with running_ingest(settings):
        for _ in range(DELIVERIES):  # each delivery is a new Kafka record, as a gateway retry is
            await produce(topics["raw_topic"], [(None, raw) for raw in raws])
        await caught_up(settings.group_id, topics["raw_topic"], timeout=120)  # every delivery normalised
        events = await read_to_end(topics["events_topic"], settled=True)
        dead = await read_to_end(topics["raw_topic"] + ".dlq", settled=True)
    counts = collections.Counter(e["event_id"] for e in events)
    assert set(counts) == expected, f"missing {len(expected - set(counts))}, unexpected {len(set(counts) - expected)}"
    assert [i for i, n in counts.items() if n > 1] == [], "an event came out more than once"
    assert len(dead) == refused * DELIVERIES
    everything = orjson.dumps([events, dead])
    for secret in (b"xxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", b"izkp56kz4qs0or1m3m1c"):  # a uazapi token, an Evolution apikey
        assert secret not in everything
