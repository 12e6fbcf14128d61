"""The ingress's pure parts: route labels, signatures, keys, and the per-channel split of Cloud API bodies."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import orjson
import pytest
from aiokafka.errors import KafkaError
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.ingest.metrics import WebhookMetrics
from services.ingest.settings import WebhookSettings
from services.ingest.webhook import (
    RawProducer,
    Unavailable,
    bearer,
    cloudapi_records,
    gateway_records,
    route_of,
    secret_equals,
    shard,
    signature_matches,
)


def test_route_labels_are_a_closed_set_and_never_the_path() -> None:
    assert route_of("/webhooks/uazapi/some-key-in-the-path") == "uazapi"
    assert route_of("/webhooks/cloudapi") == "cloudapi"
    assert route_of("/webhooks/evolution/k") == "evolution"
    assert route_of("/webhooks/other/k") == "unknown"
    assert route_of("/wp-login.php") == "unknown"
    assert route_of("/metrics") is None


@given(st.binary(max_size=2048))
def test_signature_is_hmac_sha256_of_the_exact_body(body: bytes) -> None:
    good = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert signature_matches(body, good, "app-secret")
    assert signature_matches(body, good.upper().replace("SHA256=", "sha256="), "app-secret")
    assert not signature_matches(body + b" ", good, "app-secret")
    assert not signature_matches(body, good, "another-secret")
    assert not signature_matches(body, good.removeprefix("sha256="), "app-secret")
    assert not signature_matches(body, None, "app-secret")


def test_keys_compare_whole_and_an_unset_secret_matches_nothing() -> None:
    key = SecretStr("k" * 20)
    assert secret_equals("k" * 20, key)
    assert not secret_equals("k" * 19, key)
    assert not secret_equals(None, key)
    assert not secret_equals("", None)
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None


def _change(channel: str | None, n: int) -> dict[str, object]:
    value: dict[str, object] = {"messages": [{"id": f"m{n}"}]}
    if channel is not None:
        value["metadata"] = {"phone_number_id": channel}
    return {"field": "messages", "value": value}


@given(st.lists(st.lists(st.sampled_from(["A", "B", "C", None]), min_size=1, max_size=4), min_size=1, max_size=4))
def test_split_keeps_every_change_once_under_its_channel(entries: list[list[str | None]]) -> None:
    n = iter(range(1000))
    body = {"object": "whatsapp_business_account",
            "entry": [{"id": f"W{i}", "changes": [_change(c, next(n)) for c in channels]}
                      for i, channels in enumerate(entries)]}
    raw = orjson.dumps(body)
    records = cloudapi_records(raw, body)
    channels = {c for e in entries for c in e}
    assert len(records) == len(channels)
    if len(channels) == 1:
        assert records[0][1] == raw  # unchanged bytes when there is nothing to split
    seen = []
    for key, value in records:
        split = orjson.loads(value)
        assert split["object"] == "whatsapp_business_account"
        for entry in split["entry"]:
            assert entry["changes"]
            for change in entry["changes"]:
                channel = change["value"].get("metadata", {}).get("phone_number_id")
                assert (channel.encode() if channel else None) == key
                seen.append(change["value"]["messages"][0]["id"])
    assert sorted(seen) == sorted(f"m{i}" for i in range(sum(len(e) for e in entries)))


def test_gateway_keys_come_from_the_body() -> None:
    assert gateway_records("evolution", b"{}", {"instance": "evo"}) == [(b"evo", b"{}")]
    assert gateway_records("uazapi", b"{}", {"instanceName": "uaz"}) == [(b"uaz", b"{}")]
    assert gateway_records("uazapi", b"{}", {"instanceName": 7}) == [(None, b"{}")]
    assert gateway_records("cloudapi", b"{}", {"object": "x"}) == [(None, b"{}")]


def test_settings_refuse_short_secrets_and_need_no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIPLUS_REDIS_URL", raising=False)
    with pytest.raises(ValueError, match="cloudapi_app_secret"):
        WebhookSettings(kafka_bootstrap="127.0.0.1:1", cloudapi_app_secret="")
    with pytest.raises(ValueError, match="webhook_key"):
        WebhookSettings(kafka_bootstrap="127.0.0.1:1", webhook_key="short")
    settings = WebhookSettings(kafka_bootstrap="127.0.0.1:1")
    assert settings.redis_url is None
    assert settings.webhook_port == 9180
    assert settings.webhook_host == "127.0.0.1"


@given(st.binary(min_size=1, max_size=40), st.integers(1, 16))
def test_a_channel_always_goes_through_the_same_producer(key: bytes, shards: int) -> None:
    assert shard(key, shards) == shard(bytes(key), shards)
    assert 0 <= shard(key, shards) < shards
    assert shard(None, shards) == shard(b"", shards)


def test_channels_spread_over_the_producers() -> None:
    used = {shard(f"1055500{i:06d}".encode(), 4) for i in range(100)}
    assert used == {0, 1, 2, 3}


class FakeProducer:
    """Stands in for AIOKafkaProducer: each send returns a delivery future the test settles."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[object]] = []
        self.stopped = False

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: object) -> asyncio.Future[object]:
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]

    async def stop(self) -> None:
        self.stopped = True


def _raw_producer(
    monkeypatch: pytest.MonkeyPatch, producers: list[FakeProducer]
) -> tuple[RawProducer, list[FakeProducer]]:
    settings = WebhookSettings(kafka_bootstrap="127.0.0.1:1", webhook_producers=len(producers),
                               webhook_ack_timeout_seconds=0.2)
    raw = RawProducer(settings, WebhookMetrics(CollectorRegistry()))
    raw._producers = producers  # type: ignore[assignment]
    raw.connected = True
    replacements: list[FakeProducer] = []

    async def connect() -> FakeProducer:
        replacements.append(FakeProducer())
        return replacements[-1]

    monkeypatch.setattr(raw, "_connect", connect)
    return raw, replacements


async def test_a_producer_whose_delivery_failed_is_replaced_and_a_slow_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producers = [FakeProducer(), FakeProducer()]
    raw, replacements = _raw_producer(monkeypatch, producers)
    failing, slow = b"channel-a", b"channel-d"
    assert shard(failing, 2) != shard(slow, 2)
    stored = asyncio.create_task(raw.store([(failing, b"{}")], "cloudapi"))
    await asyncio.sleep(0.01)
    producers[shard(failing, 2)].deliveries[0].set_exception(KafkaError())  # e.g. a batch expired
    with pytest.raises(Unavailable):
        await stored
    with pytest.raises(Unavailable):  # no acknowledgement within the deadline: 503, producer kept
        await raw.store([(slow, b"{}")], "cloudapi")
    before = list(producers)
    await raw._replace_broken(producers)
    assert producers[shard(failing, 2)] is replacements[0]
    assert producers[shard(slow, 2)] is before[shard(slow, 2)]
    assert before[shard(failing, 2)].stopped
    assert len(replacements) == 1
    assert raw.metrics.producer_replacements._value.get() == 1
    # A late failure reported by the replaced producer does not replace its successor.
    raw._broken.add(before[shard(failing, 2)])  # type: ignore[arg-type]
    await raw._replace_broken(producers)
    assert len(replacements) == 1


async def test_requests_are_refused_at_once_while_the_broker_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    producers = [FakeProducer()]
    raw, _ = _raw_producer(monkeypatch, producers)
    raw.connected = False
    with pytest.raises(Unavailable):
        await raw.store([(b"channel", b"{}")], "uazapi")
    assert producers[0].deliveries == []
