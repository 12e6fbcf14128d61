"""ingest's settings (APIPLUS_INGEST_*), built once at start. Durations in seconds; topics from apiplus.topics."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from apiplus import topics
from apiplus.settings import WorkerSettings
from services.ingest.common import valid_zone


class IngestSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="APIPLUS_INGEST_", frozen=True, extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = Field(9101, ge=0, le=65535)  # 0: any free port
    group_id: str = "apiplus-ingest"
    health_group_id: str = "apiplus-ingest-health"
    raw_topic: str = topics.INGEST_RAW.name
    # Evolution API's own Kafka integration: per-instance topics and its global topic.
    evolution_pattern: str = r"evolution\..*"
    subscribe_evolution: bool = True
    events_topic: str = topics.INGEST_EVENTS.name
    health_topic: str = topics.INGEST_HEALTH.name
    state_topic: str = topics.INGEST_CHANNEL_STATE.name
    max_payload_bytes: int = Field(512 * 1024, ge=1024)
    dedupe_window_seconds: int = Field(24 * 3600, ge=60)
    # A typed answer to numbered options is recognised this long after the offer (docs/loop.md).
    offer_window_seconds: int = Field(24 * 3600, ge=60)
    # How to read Evolution's envelope `date_time`, used only for events without a time of their own:
    # "receipt" (the Kafka record's timestamp), "utc" (the server runs in UTC), or the server's IANA
    # zone ("America/Sao_Paulo"). See docs/ingest.md.
    evolution_clock: str = "receipt"
    flapping_disconnects: int = Field(5, ge=2)
    flapping_window_seconds: float = Field(600, gt=0)
    qr_loop_codes: int = Field(5, ge=2)
    stale_after_seconds: float = Field(1800, gt=0)
    tick_seconds: float = Field(15, gt=0)

    @field_validator("evolution_clock")
    @classmethod
    def _known_clock(cls, value: str) -> str:
        if value in ("receipt", "utc") or valid_zone(value):
            return value
        raise ValueError(f"evolution_clock must be receipt, utc or an IANA time zone, not {value!r}")


class WebhookSettings(WorkerSettings):
    """`apiplus ingest webhook`: the HTTP ingress for the gateways' webhooks. It needs Kafka, not Redis.

    A secret left unset closes its route (every request refused), so a deployment that serves only one
    gateway does not have to invent secrets for the others.
    """

    model_config = SettingsConfigDict(env_prefix="APIPLUS_INGEST_", frozen=True, extra="ignore")

    # The ingress never talks to Redis; the shared settings make it required for the workers only.
    redis_url: SecretStr | None = Field(None, validation_alias=AliasChoices("APIPLUS_REDIS_URL"))  # type: ignore[assignment]
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(9180, ge=0, le=65535)  # 0: any free port
    raw_topic: str = topics.INGEST_RAW.name
    # At least 16 characters each: an empty app secret would let anyone sign a body.
    cloudapi_verify_token: SecretStr | None = Field(None, min_length=16)
    cloudapi_app_secret: SecretStr | None = Field(None, min_length=16)
    webhook_key: SecretStr | None = Field(None, min_length=16)
    # At most the ingest worker's payload limit (APIPLUS_INGEST_MAX_PAYLOAD_BYTES) and the broker's
    # default message.max.bytes (1 MB), so nothing accepted here is refused further on.
    webhook_max_body_bytes: int = Field(512 * 1024, ge=1024, le=1_000_000)
    webhook_ack_timeout_seconds: float = Field(5.0, gt=0)
    webhook_retry_after_seconds: int = Field(5, ge=1)
    webhook_max_pending: int = Field(10_000, ge=1)
    webhook_linger_ms: int = Field(2, ge=0)
    webhook_producers: int = Field(4, ge=1, le=16)
